// packMicroBatch: the host side of a training step, without a GPU. Shifted targets, padding, the labelled
// rows the LM head sees (and the inverse map the gradient is scattered back through), a joint batch's row
// offset, and the stored teacher top-k laid out per LM-head row.
import { describe, expect, it } from 'vitest';
import { packMicroBatch, type MicroBatch } from '../src/train/trainer.ts';
import type { TrainExample } from '../src/train/data.ts';
import { UserError } from '../src/util/errors.ts';

const NONE = 0xffffffff;

// Row 0: prompt 5 6, completion 7 8. Row 1 (shorter, padded): prompt 9, completion 10.
const rows: TrainExample[] = [
  { ids: [5, 6, 7, 8], labels: [-100, -100, 7, 8] },
  { ids: [9, 10], labels: [-100, 10] },
];
const mb: MicroBatch = { rows, T: 4 };

describe('packMicroBatch', () => {
  it('pads ids, numbers positions and shifts the labels into targets', () => {
    const p = packMicroBatch(mb, { offlineTopK: false });
    expect(Array.from(p.ids)).toEqual([5, 6, 7, 8, 9, 10, 0, 0]);
    expect(Array.from(p.pos)).toEqual([0, 1, 2, 3, 0, 1, 2, 3]);
    // Position t predicts labels[t + 1]; the last position of a row and padding predict nothing.
    expect(Array.from(p.tgt)).toEqual([-100, 7, 8, -100, 10, -100, -100, -100]);
    expect(p.targets).toBe(3);
    expect(p.topk).toBeNull();
  });

  it('lists only the labelled rows for the LM head, with the inverse map back', () => {
    const c = packMicroBatch(mb, { offlineTopK: false }).compact!;
    expect(Array.from(c.hostRows)).toEqual([1, 2, 4]);
    expect(Array.from(c.rows)).toEqual([1, 2, 4]);
    expect(Array.from(c.tgt)).toEqual([7, 8, 10]);
    expect(Array.from(c.inverse!)).toEqual([NONE, 0, 1, NONE, 2, NONE, NONE, NONE]);
  });

  it('compacts nothing in a micro-batch without labelled positions', () => {
    const none: MicroBatch = { rows: [{ ids: [1, 2, 3], labels: [-100, -100, -100] }], T: 3 };
    for (const joint of [undefined, { rowOffset: 4 }]) {
      const p = packMicroBatch(none, { offlineTopK: false, joint });
      expect(p.targets).toBe(0);
      expect(p.compact).toBeNull();
      expect(Array.from(p.tgt)).toEqual([-100, -100, -100]);
    }
  });

  it('offsets the labelled rows of a joint block by its first row (no inverse map there)', () => {
    const c = packMicroBatch(mb, { offlineTopK: false, joint: { rowOffset: 8 } }).compact!;
    expect(Array.from(c.hostRows)).toEqual([1, 2, 4]);
    expect(Array.from(c.rows)).toEqual([9, 10, 12]);
    expect(c.inverse).toBeNull();
  });

  it('lays out the stored teacher top-k per labelled row, padding short lists with −∞', () => {
    const withTopK: MicroBatch = {
      T: 4,
      rows: [
        { ...rows[0], teacherTopK: { indices: [[], [7, 3], [8], []], logprobs: [[], [-0.1, -2], [-0.5], []] } },
        { ...rows[1], teacherTopK: { indices: [[10, 1], []], logprobs: [[-0.2, -1.5], []] } },
      ],
    };
    const t = packMicroBatch(withTopK, { offlineTopK: true }).topk!;
    expect([t.rows, t.k]).toEqual([3, 2]);
    expect(Array.from(t.indices)).toEqual([7, 3, 8, NONE, 10, 1]);
    expect(Array.from(t.logprobs)).toEqual([Math.fround(-0.1), -2, -0.5, -Infinity, Math.fround(-0.2), -1.5]);
    expect(Array.from(t.mask)).toEqual([1, 1, 1]);
  });

  it('refuses offline distillation without stored top-k', () => {
    expect(() => packMicroBatch(mb, { offlineTopK: true })).toThrow(UserError);
    const some: MicroBatch = { T: 4, rows: [{ ...rows[0], teacherTopK: { indices: [[], [7], [8], []], logprobs: [[], [-1], [-1], []] } }, rows[1]] };
    expect(() => packMicroBatch(some, { offlineTopK: true })).toThrow(/every row needs "teacher_topk"/);
  });
});
