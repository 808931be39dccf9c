{ sum[$2] += $3; n[$2]++ }
END { for (k = 0; k < 17; k++) printf "%2d %6d %4d %.2f\n", k, sum[k], n[k], sum[k] / n[k] }
