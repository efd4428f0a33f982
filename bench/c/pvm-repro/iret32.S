/* 32-bit protected mode: #UD (ud2) is delivered through the IDT, the handler skips ud2 and IRETs. */
.code32
.globl _start
_start:
  # IDT at 0x200000 with entry 0x30 → handler
  mov $handler, %eax
  mov $0x200000 + 6*8, %edi
  mov %ax, (%edi)
  movw $0x08, 2(%edi)
  movw $0x8e00, 4(%edi)
  shr $16, %eax
  mov %ax, 6(%edi)
  lidt idtr
  ud2
  mov $'B', %al
  out %al, $0xe9
  mov $'\n', %al
  out %al, $0xe9
  cli
  hlt
handler:
  mov $'A', %al
  out %al, $0xe9
  addl $2, (%esp)
  iret
idtr: .word 0x7ff
  .long 0x200000
