/*
 * The dmvx guest kernel. Every path is a few instructions ending in an `out`
 * to a port of dmvx-abi; the VMM does the rest by editing registers and
 * memory, then tells the vCPU where to continue. Instructions at CPL0 may be
 * emulated one by one on nested hosts, so keep these paths short.
 */

/* LSTAR. Runs at CPL0 on bare metal and at CPL3 where `syscall` keeps
 * privilege, so it lives on a user-executable page and touches no stack.
 * `out imm8, al` needs no register set up and clobbers nothing. */
.section .dmvx_user_text, "ax"
.globl dmvx_syscall_entry
dmvx_syscall_entry:
    out {port_syscall}, al
    hlt

.section .text.dmvx, "ax"

/* First instruction of the VM: announce, then enter the program through the
 * iret frame the VMM placed at rsp. */
.globl dmvx_boot
dmvx_boot:
    out {port_boot}, al
.globl dmvx_user_return
dmvx_user_return:
    iretq

/* Apply the VMM's batch of copies (rbx = ops, rbp = count), flush the TLB,
 * report. Page-table writes that take a mapping away must be made by the
 * guest so that a shadow-paging KVM sees them. */
.globl dmvx_kops
dmvx_kops:
1:  mov rdi, [rbx]
    mov rsi, [rbx + 8]
    mov rcx, [rbx + 16]
    rep movsq
    add rbx, 24
    dec rbp
    jnz 1b
    mov rax, cr3
    mov cr3, rax
    out {port_kops_done}, al
    hlt

/* Exception stubs: equalise the frame (error code always present), report
 * the vector through the port number. */
.macro EXC_STUB v, push_zero
.globl dmvx_exc_\v
dmvx_exc_\v:
.if \push_zero
    push 0
.endif
    out {port_exception_base} + \v, al
    hlt
.endm

EXC_STUB 0, 1
EXC_STUB 1, 1
EXC_STUB 2, 1
EXC_STUB 3, 1
EXC_STUB 4, 1
EXC_STUB 5, 1
EXC_STUB 6, 1
EXC_STUB 7, 1
EXC_STUB 8, 0
EXC_STUB 9, 1
EXC_STUB 10, 0
EXC_STUB 11, 0
EXC_STUB 12, 0
EXC_STUB 13, 0
EXC_STUB 14, 0
EXC_STUB 15, 1
EXC_STUB 16, 1
EXC_STUB 17, 0
EXC_STUB 18, 1
EXC_STUB 19, 1
EXC_STUB 20, 1
EXC_STUB 21, 0
EXC_STUB 22, 1
EXC_STUB 23, 1
EXC_STUB 24, 1
EXC_STUB 25, 1
EXC_STUB 26, 1
EXC_STUB 27, 1
EXC_STUB 28, 1
EXC_STUB 29, 0
EXC_STUB 30, 0
EXC_STUB 31, 1
