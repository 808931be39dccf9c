define(`GREET', `Hello, $1!')dnl
define(`REPEAT', `ifelse(`$1', `0', `', `$2`'REPEAT(decr($1), `$2')')')dnl
GREET(`dmvx')
REPEAT(5, `ab')
eval(2 ** 20)
