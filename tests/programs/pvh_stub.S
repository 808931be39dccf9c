/*
 * A minimal PVH kernel for testing Linux mode's boot path and exits without
 * Linux: an ELF64 with a XEN_ELFNOTE_PHYS32_ENTRY note whose 32-bit entry
 * prints "dmvx-pvh-stub: <cmdline>" on COM1, then does what the first
 * character of the command line asks:
 *   p  power off (ACPI S5: SLP_TYP 5 | SLP_EN to the PM1a control port)
 *   r  reset (0xfe to the i8042 command port)
 *   t  triple fault (load a selector past the GDT limit with no IDT)
 *   i  print the initrd's first line (module 0) first, then power off
 *   anything else: spin with interrupts off (for --timeout)
 */
    .section .note.Xen, "a", @note
    .balign 4
    .long 4             /* name size */
    .long 4             /* descriptor size */
    .long 18            /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .long _start

    .text
    .code32
    .globl _start
_start:
    mov $0x8ff0, %esp           /* PVH gives no stack: use free low memory */
    mov $0x3f8, %dx
    mov $banner, %esi
    call puts
    mov 24(%ebx), %esi          /* hvm_start_info.cmdline_paddr */
    call puts
    mov $'\n', %al
    out %al, %dx
    mov 24(%ebx), %esi
    movb (%esi), %al
    cmp $'p', %al
    je poweroff
    cmp $'r', %al
    je reset
    cmp $'t', %al
    je triple
    cmp $'i', %al
    je initrd
hang:
    jmp hang

initrd:
    cmpl $1, 12(%ebx)           /* nr_modules */
    jne hang
    mov 16(%ebx), %edi          /* modlist_paddr */
    mov (%edi), %esi            /* module 0: paddr */
1:  lodsb
    out %al, %dx
    cmp $'\n', %al
    jne 1b
poweroff:
    mov $0x604, %dx
    mov $0x3400, %ax
    out %ax, %dx
    jmp hang
reset:
    mov $0x64, %dx
    mov $0xfe, %al
    out %al, %dx
    jmp hang
triple:
    mov $0x78, %ax
    mov %ax, %ds
    jmp hang

/* Writes the NUL-terminated string at %esi to port %dx. */
puts:
    lodsb
    test %al, %al
    jz 2f
    out %al, %dx
    jmp puts
2:  ret

banner:
    .asciz "dmvx-pvh-stub: "
