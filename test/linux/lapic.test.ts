// The local APIC state a Linux boot starts with: LVT LINT0 in ExtINT mode and LINT1 in NMI mode on every vCPU
// (what a PC BIOS leaves), read back from KVM's in-kernel local APIC.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Vm } from "../../src/vm/vm.js";

test("setVirtualWireLints: LINT0 ExtINT and LINT1 NMI, unmasked, on each vCPU; the other LVT entries untouched", () => {
  const vm = Vm.create({ memSize: 4 << 20 });
  try {
    for (let i = 0; i < 2; i++) {
      const v = vm.createVcpu();
      const before = v.getLapic();
      // At reset KVM masks LINT1 (and LINT0 on APs): the state vmtool must change.
      assert.equal(before.readUInt32LE(0x360) & 0x10000, 0x10000, `vCPU ${i}: LINT1 masked at reset`);
      v.setVirtualWireLints();
      const after = v.getLapic();
      assert.equal(after.readUInt32LE(0x350) & 0x1_0700, 0x700, `vCPU ${i}: LINT0 ExtINT, unmasked`);
      assert.equal(after.readUInt32LE(0x360) & 0x1_0700, 0x400, `vCPU ${i}: LINT1 NMI, unmasked`);
      for (const reg of [0x320, 0x330, 0x340, 0x370])
        assert.equal(after.readUInt32LE(reg), before.readUInt32LE(reg));
    }
  } finally {
    vm.close();
  }
});
