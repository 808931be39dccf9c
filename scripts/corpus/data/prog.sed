s/\(ka\)\(lo\)/\2\1/g
/^qu/d
y/abc/ABC/
$a\
-- end of file --
