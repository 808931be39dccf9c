#!/usr/bin/env bash
# Makes the corpus' derived inputs natively, in target/corpus/data (the
# current directory): compressed files, archives, a key and certificate, a
# database, the C programs of programs/. Deterministic where the tools allow.
set -euo pipefail
here=$(dirname "$(readlink -f "$0")")
export SOURCE_DATE_EPOCH=1704067200 TZ=UTC LC_ALL=C
gzip -9 -n -c words.txt > words.txt.gz
bzip2 -9 -c words.txt > words.txt.bz2
xz -c words.txt > words.txt.xz
zstd -q --single-thread -c words.txt > words.txt.zst
lz4 -q -c words.txt > words.txt.lz4
brotli -c words.txt > words.txt.br
lzop -c words.txt > words.txt.lzo
tar --sort=name --mtime=@1704067200 --owner=0 --group=0 --numeric-owner -cf tree.tar tree
gzip -9 -n -c tree.tar > tree.tar.gz
(find tree | LC_ALL=C sort | cpio --quiet -o -H newc --reproducible > tree.cpio)
(cd tree && zip -q -X -r ../tree.zip .)
printf 'caf\xe9 na\xefve \xe0 la cr\xe8me\n' > latin1.txt
openssl genrsa -out key.pem 2048 2>/dev/null
# genrsa makes it 0600; the jailed VMM reads the root's files as an unprivileged uid.
chmod 0644 key.pem
openssl req -new -x509 -key key.pem -subj /CN=dmvx.test/O=corpus -days 30 -set_serial 7 -out cert.pem
openssl enc -aes-256-cbc -K 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f \
    -iv 0f0e0d0c0b0a09080706050403020100 -in words.txt -out words.enc
sqlite3 db.sqlite < query.sql > /dev/null
git init -q repo
(cd repo && cp ../a.txt ../hello.c . && git add . \
    && GIT_AUTHOR_DATE=@1704067200 GIT_COMMITTER_DATE=@1704067200 git -c user.name=corpus \
       -c user.email=corpus@dmvx.test commit -q -m "first commit")
/usr/lib/gcc/x86_64-linux-gnu/12/cc1 -quiet -imultiarch x86_64-linux-gnu hello.c -o hello.s
as hello.s -o hello.o
mkdir -p bin
for src in "$here"/programs/*.c; do
    name=$(basename "$src" .c)
    if [ "$name" = preload ]; then
        gcc -O1 -g0 -Wall -shared -fPIC -o bin/preload.so "$src"
    else
        gcc -O1 -g0 -Wall -o "bin/$name" "$src"
    fi
done
gcc -O1 -o bin/hello hello.c
sort -t "$(printf '\t')" -k2,2n -s table.tsv > sorted-table.tsv
sort a.txt > a.sorted; sort b.txt > b.sorted
