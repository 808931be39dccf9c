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

/* The exit-less call path (dmvx_abi::Ring): LSTAR when the ring is on. It
 * changes no register but rax (reloaded from the page before any exit) and
 * the flags (restored from r11 on the way back, as sysret would), and
 * touches no user memory: only the ring page, RIP-relative. */
.section .dmvx_user_text, "ax"
.globl dmvx_ring_entry
dmvx_ring_entry:
    mov word ptr [rip + dmvx_ring + {ring_cs}], cs
    test byte ptr [rip + dmvx_ring + {ring_cs}], 3
    jz 9f                                   /* CPL0 (bare-metal syscall): exit */
    test r11d, {rflags_tf}
    jnz 9f
    cmp dword ptr [rip + dmvx_ring + {ring_service}], {ring_awake}
    jne 9f
    cmp rax, {ring_calls}
    jae 9f
    bt qword ptr [rip + dmvx_ring + {ring_calls_off}], rax
    jnc 9f
    mov [rip + dmvx_ring + {ring_nr}], rax
    mov [rip + dmvx_ring + {ring_args}], rdi
    mov [rip + dmvx_ring + {ring_args} + 8], rsi
    mov [rip + dmvx_ring + {ring_args} + 16], rdx
    mov [rip + dmvx_ring + {ring_args} + 24], r10
    mov [rip + dmvx_ring + {ring_args} + 32], r8
    mov [rip + dmvx_ring + {ring_args} + 40], r9
    mov [rip + dmvx_ring + {ring_rcx}], rcx
    mov [rip + dmvx_ring + {ring_r11}], r11
    mov [rip + dmvx_ring + {ring_rsp}], rsp
    /* x86 keeps stores in order: the request is complete before it is posted. */
    mov dword ptr [rip + dmvx_ring + {ring_state}], {ring_request}
    mov eax, dword ptr [rip + dmvx_ring + {ring_spin}]
1:  cmp dword ptr [rip + dmvx_ring + {ring_state}], {ring_done}
    je 2f
    cmp dword ptr [rip + dmvx_ring + {ring_state}], {ring_exit}
    je 3f
    pause
    sub eax, 1
    ja 1b
3:  mov rax, [rip + dmvx_ring + {ring_nr}]
.globl dmvx_ring_wait
dmvx_ring_wait:
    out {port_ring_wait}, al
    hlt
2:  lea rsp, [rip + dmvx_ring + {ring_stack_top}]
    push r11
    and qword ptr [rsp], {ring_user_flags}
    popfq
    mov rsp, [rip + dmvx_ring + {ring_rsp}]
    mov rax, [rip + dmvx_ring + {ring_ret}]
    jmp rcx
9:
.globl dmvx_ring_exit
dmvx_ring_exit:
    out {port_syscall}, al
    hlt

/* The ring page: user-writable, never executable, no data of the kernel. */
.section .dmvx_ring, "aw", @nobits
.balign 4096
.globl dmvx_ring
dmvx_ring:
    .skip 4096
