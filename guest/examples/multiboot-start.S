/* Multiboot v1 header and entry: the loader starts us in 32-bit protected mode with EAX = 0x2BADB002 and
 * EBX = the Multiboot information; we set our own stack and call main(magic, info). */
#include <vmtool/multiboot.h>

#define MB_FLAGS (MULTIBOOT_PAGE_ALIGN | MULTIBOOT_MEMORY_INFO)

        .section .multiboot, "a"
        .balign 4
        .long   MULTIBOOT_HEADER_MAGIC
        .long   MB_FLAGS
        .long   -(MULTIBOOT_HEADER_MAGIC + MB_FLAGS)

        .section .text.start, "ax"
        .code32
        .globl _start
_start:
        cli
        mov     $__stack_top, %esp
        push    %ebx
        push    %eax
        call    main
        test    %eax, %eax
        jz      1f
        out     %al, $0xf4
1:      cli
        hlt
        jmp     1b

        .section .bss
        .balign 16
        .space  16384
__stack_top:
