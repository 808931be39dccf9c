/* Lists the interfaces getifaddrs(3) reports (glibc asks NETLINK_ROUTE:
 * RTM_GETLINK and RTM_GETADDR dumps), and if_nameindex(3): name, family,
 * address, netmask and the interface flags that matter, one line each. */
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/socket.h>

static const char *addr(const struct sockaddr *sa, char *buf, size_t n) {
    if (!sa)
        return "-";
    if (sa->sa_family == AF_INET)
        return inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, buf, n);
    if (sa->sa_family == AF_INET6)
        return inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, buf, n);
    return "link";
}

int main(void) {
    struct ifaddrs *ifa, *i;
    if (getifaddrs(&ifa) != 0) {
        perror("getifaddrs");
        return 1;
    }
    for (i = ifa; i; i = i->ifa_next) {
        char a[64], m[64];
        int fam = i->ifa_addr ? i->ifa_addr->sa_family : -1;
        printf("%s family=%d addr=%s mask=%s up=%d loopback=%d running=%d\n", i->ifa_name, fam,
               addr(i->ifa_addr, a, sizeof a), addr(i->ifa_netmask, m, sizeof m), !!(i->ifa_flags & IFF_UP),
               !!(i->ifa_flags & IFF_LOOPBACK), !!(i->ifa_flags & IFF_RUNNING));
    }
    freeifaddrs(ifa);
    struct if_nameindex *ni = if_nameindex(), *p;
    if (!ni) {
        perror("if_nameindex");
        return 1;
    }
    for (p = ni; p->if_index; p++)
        printf("index %u %s\n", p->if_index, p->if_name);
    if_freenameindex(ni);
    printf("if_nametoindex(lo)=%u\n", if_nametoindex("lo"));
    return 0;
}
