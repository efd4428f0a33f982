/* 32-bit protected mode: a software interrupt (int $0x30) through the IDT, the handler IRETs. */
.code32
.globl _start
_start:
  # IDT at 0x200000 with entry 0x30 → handler
  mov $handler, %eax
  mov $0x200000 + 0x30*8, %edi
  mov %ax, (%edi)
  movw $0x08, 2(%edi)
  movw $0x8e00, 4(%edi)
  shr $16, %eax
  mov %ax, 6(%edi)
  lidt idtr
  int $0x30
  mov $'B', %al
  out %al, $0xe9
  mov $'\n', %al
  out %al, $0xe9
  cli
  hlt
handler:
  mov $'A', %al
  out %al, $0xe9
  iret
idtr: .word 0x7ff
  .long 0x200000
