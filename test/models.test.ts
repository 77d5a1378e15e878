/** The ResNeXt family: torchvision names/shapes/sizes, MACs, the CIFAR models, the width solver, state dicts. */
import * as rx from '../lib';

const { models } = rx;

describe('ImageNet family in torchvision layout', () => {
  const expected: [string, () => rx.nn.Module, number, number][] = [
    // [builder, params (torchvision), GMACs at 224x224 (design.md section 6)]
    ['resnet50', () => models.resnet50({ init: 'zeros' }), 25_557_032, 4.09],
    ['resnext50_32x4d', () => models.resnext50_32x4d({ init: 'zeros' }), 25_028_904, 4.23],
    ['resnext101_32x8d', () => models.resnext101_32x8d({ init: 'zeros' }), 88_791_336, 16.41],
    ['resnext101_64x4d', () => models.resnext101_64x4d({ init: 'zeros' }), 83_455_272, 15.46],
  ];

  test.each(expected)('%s: parameter count, names and shapes', (name, build, params) => {
    const m = build();
    try {
      expect(models.countParams(m).total).toBe(params);
      const sd = m.stateDict();
      const shape = (k: string) => sd[k]?.shape;
      const groups = name === 'resnet50' ? 1 : name.includes('64x4d') ? 64 : 32;
      const wpg = name === 'resnet50' ? 64 : name.includes('x8d') ? 8 : 4;
      const width1 = groups * wpg; // stage-1 bottleneck width
      expect(shape('conv1.weight')).toEqual([64, 3, 7, 7]);
      expect(shape('bn1.running_mean')).toEqual([64]);
      expect(sd['bn1.num_batches_tracked'].dtype).toBe('int32');
      expect(shape('layer1.0.conv1.weight')).toEqual([width1, 64, 1, 1]);
      expect(shape('layer1.0.conv2.weight')).toEqual([width1, wpg, 3, 3]);
      expect(shape('layer1.0.conv3.weight')).toEqual([256, width1, 1, 1]);
      expect(shape('layer1.0.downsample.0.weight')).toEqual([256, 64, 1, 1]);
      expect(shape('layer1.0.downsample.1.running_var')).toEqual([256]);
      expect(shape('layer2.0.conv2.weight')).toEqual([2 * width1, 2 * wpg, 3, 3]);
      expect(shape('layer4.2.bn3.weight')).toEqual([2048]);
      expect(shape('fc.weight')).toEqual([1000, 2048]);
      expect(shape('fc.bias')).toEqual([1000]);
      expect(sd['layer1.1.downsample.0.weight']).toBeUndefined();
      // Every BN contributes 5 entries, every conv 1, fc 2.
      const convs = Object.keys(sd).filter((k) => k.endsWith('.weight') && sd[k].ndim === 4).length;
      const bns = Object.keys(sd).filter((k) => k.endsWith('running_mean')).length;
      expect(Object.keys(sd).length).toBe(convs + 5 * bns + 2);
    } finally {
      m.dispose();
    }
  });

  test.each(expected)('%s: multiply-adds at 224x224 within 1%% of the reference', (_name, build, _p, gmacs) => {
    const m = build();
    try {
      const r = models.countMACs(m, [3, 224, 224]);
      expect(Math.abs(r.total / 1e9 - gmacs) / gmacs).toBeLessThan(0.01);
      const stem = r.layers.find((l) => l.name === 'conv1')!;
      expect(stem.outputShape).toEqual([1, 64, 112, 112]);
      expect(stem.macs).toBe(112 * 112 * 64 * 3 * 49);
      expect(r.layers.at(-1)!.name).toBe('fc');
    } finally {
      m.dispose();
    }
  });

  test('stride 2 sits in the 3x3 conv of each stage\'s first block', () => {
    const m = models.resnext50_32x4d({ init: 'zeros' });
    const mods = new Map(m.namedModules());
    for (const s of [2, 3, 4]) {
      expect((mods.get(`layer${s}.0.conv1`) as rx.nn.Conv2d).stride).toBe(1);
      expect((mods.get(`layer${s}.0.conv2`) as rx.nn.Conv2d).stride).toBe(2);
      expect((mods.get(`layer${s}.0.conv2`) as rx.nn.Conv2d).groups).toBe(32);
    }
    m.dispose();
  });

  test('the blocks use the fused batchNormReLU and batchNormAddReLU ops', () => {
    const m = models.resnext({ layers: [1, 1, 1, 1], groups: 2, widthPerGroup: 4, numClasses: 3 });
    rx.tidy(() => {
      const y = m.forward(rx.randn([2, 3, 32, 32]));
      const names = new Set<string>();
      const walk = (t: rx.Tensor | null) => {
        if (!t?.gradFn || names.has(`${t.gradFn.name}:${t.shape}`)) return;
        names.add(`${t.gradFn.name}:${t.shape}`);
        t.gradFn.inputs.forEach(walk);
      };
      walk(y);
      const ops = [...names].map((n) => n.split(':')[0]);
      expect(ops).toContain('batchNormReLU');
      expect(ops).toContain('batchNormAddReLU');
      expect(ops).not.toContain('relu');
    });
    m.dispose();
  });

  test('zeroInitResidual zeroes the last BN weight of every block', () => {
    const m = models.resnext({ layers: [1, 2, 1, 1], groups: 2, widthPerGroup: 4, numClasses: 3, zeroInitResidual: true });
    const sd = m.stateDict();
    for (const k of ['layer1.0.bn3.weight', 'layer2.1.bn3.weight', 'layer4.0.bn3.weight']) expect(Array.from(sd[k].dataSync()).every((v) => v === 0)).toBe(true);
    expect(Array.from(sd['layer1.0.bn2.weight'].dataSync()).every((v) => v === 1)).toBe(true);
    m.dispose();
  });
});

describe('builders that fail half way', () => {
  test('leave no tensor behind (a too-wide model fails at its first block, after the stem exists)', () => {
    const before = rx.memory().tensors;
    expect(() => models.resnext({ layers: [1, 1, 1, 1], groups: 2 ** 20, widthPerGroup: 2 ** 20 })).toThrow(
      expect.objectContaining({ code: 'ERR_OOM' }),
    );
    expect(() => models.resnext29({ cardinality: 2 ** 20, width: 2 ** 20 })).toThrow(expect.objectContaining({ code: 'ERR_OOM' }));
    expect(rx.memory().tensors).toBeLessThanOrEqual(before); // GC may free unrelated garbage meanwhile
  });

  test('counts out of range are ERR_ARG before anything is built', () => {
    for (const k of ['groups', 'widthPerGroup', 'numClasses', 'inChannels'])
      expect(() => models.resnext({ layers: [1, 1, 1, 1], [k]: 1e12 })).toThrow(expect.objectContaining({ code: 'ERR_ARG', message: expect.stringContaining(k) }));
  });
});

describe('CIFAR ResNeXt-29', () => {
  test.each([
    ['resnext29_8x64d', 34.4, () => models.resnext29_8x64d({ init: 'none' })],
    ['resnext29_16x64d', 68.1, () => models.resnext29_16x64d({ init: 'none' })],
  ] as const)('%s has the paper\'s size (%s M)', (_n, paperM, build) => {
    const m = build();
    const c = models.countParams(m);
    // The paper's sizes match without BN's affine parameters; with them the counts are 0.1% higher.
    const bn = c.layers.filter((l) => l.type === 'BatchNorm2d').reduce((a, l) => a + l.params, 0);
    expect(((c.total - bn) / 1e6).toFixed(1)).toBe(paperM.toFixed(1));
    expect(Math.abs(c.total / 1e6 - paperM) / paperM).toBeLessThan(0.002);
    const sd = m.stateDict();
    expect(sd['stage1.0.conv2.weight'].shape).toEqual([m instanceof models.ResNeXt29 ? m.config.cardinality * 64 : 0, 64, 3, 3]);
    expect(sd['stage3.0.conv2.weight'].shape[0]).toBe((m as rx.models.ResNeXt29).config.cardinality * 64 * 4);
    m.dispose();
  });

  test('accepts 28x28 and 32x32 inputs with any channel count', () => {
    for (const [ch, size] of [[1, 28], [3, 32], [2, 30]]) {
      const m = models.resnext29({ cardinality: 2, width: 2, stemChannels: 8, stageChannels: [16, 32, 64], inChannels: ch, numClasses: 7 });
      rx.tidy(() => expect(m.forward(rx.randn([2, ch, size, size])).shape).toEqual([2, 7]));
      m.dispose();
    }
  });
});

describe('width solver', () => {
  test('reproduces the paper\'s fixed-complexity ResNeXt-50 widths: 1x64d, 2x40d, 4x24d, 8x14d, 32x4d', () => {
    const got = [1, 2, 4, 8, 32].map((C) => models.solveResNeXtWidth(C).width);
    expect(got).toEqual([64, 40, 24, 14, 4]);
  });

  test('solveWidth on the CIFAR family matches a baseline within one width step', () => {
    const build = (C: number, d: number) => models.resnext29({ cardinality: C, width: d, stemChannels: 16, stageChannels: [64, 128, 256], init: 'none' });
    const base = build(1, 16);
    const target = models.countParams(base).total;
    base.dispose();
    const r = models.solveWidth((d) => build(4, d), target);
    const lo = build(4, r.width - 1), hi = build(4, r.width + 1);
    const [pl, ph] = [models.countParams(lo).total, models.countParams(hi).total];
    expect(Math.abs(r.params - target)).toBeLessThanOrEqual(Math.min(Math.abs(pl - target), Math.abs(ph - target)));
    lo.dispose();
    hi.dispose();
  });
});

describe('state dicts', () => {
  const small = (seed: number) => {
    rx.manualSeed(seed);
    return models.resnext29({ cardinality: 2, width: 4, stemChannels: 8, stageChannels: [16, 32, 64], numClasses: 5 });
  };

  test('a state dict loaded into a differently initialised model gives identical outputs', () => {
    const a = small(1), b = small(2);
    rx.tidy(() => {
      // train a little so BN running stats differ from their initial values
      a.forward(rx.randn([4, 3, 16, 16], { seed: 5 }));
      a.eval();
      b.eval();
      const x = rx.randn([3, 3, 16, 16], { seed: 6 });
      const ya = Array.from(a.forward(x).dataSync());
      expect(Array.from(b.forward(x).dataSync())).not.toEqual(ya);
      const r = b.loadStateDict(a.stateDict());
      expect(r).toEqual({ missing: [], unexpected: [] });
      expect(Array.from(b.forward(x).dataSync())).toEqual(ya);
    });
    a.dispose();
    b.dispose();
  });

  test('strict loading names missing and unexpected keys; shape mismatches are ERR_SHAPE and change nothing', () => {
    const a = small(1), b = small(2);
    const sd = { ...a.stateDict() };
    const fc = sd['fc.weight'];
    delete sd['fc.weight'];
    sd['fc.extra'] = fc;
    expect(() => b.loadStateDict(sd)).toThrow(expect.objectContaining({ code: 'ERR_ARG', message: expect.stringMatching(/missing: fc\.weight; unexpected: fc\.extra/) }));
    expect(b.loadStateDict(sd, { strict: false })).toEqual({ missing: ['fc.weight'], unexpected: ['fc.extra'] });
    const before = Array.from(b.stateDict()['conv1.weight'].dataSync());
    const bad = { ...a.stateDict(), 'bn1.weight': rx.zeros([3]) };
    expect(() => b.loadStateDict(bad)).toThrow(expect.objectContaining({ code: 'ERR_SHAPE', message: expect.stringMatching(/bn1\.weight/) }));
    expect(Array.from(b.stateDict()['conv1.weight'].dataSync())).toEqual(before);
    a.dispose();
    b.dispose();
  });

  test('train()/eval() switch every BN; num_batches_tracked counts training forwards', () => {
    const m = small(3);
    rx.tidy(() => {
      m.forward(rx.randn([2, 3, 8, 8]));
      m.forward(rx.randn([2, 3, 8, 8]));
      m.eval();
      m.forward(rx.randn([2, 3, 8, 8]));
    });
    expect(Array.from(m.stateDict()['stage1.0.bn1.num_batches_tracked'].dataSync())).toEqual([2]);
    expect(m.namedModules().every(([, x]) => !x.training)).toBe(true);
    m.dispose();
  });
});

test('a model state dict saved as safetensors and loaded into a fresh model gives identical outputs', async () => {
  const fs = await import('node:fs');
  const os = await import('node:os');
  const path = await import('node:path');
  rx.manualSeed(7);
  const a = models.resnext({ layers: [1, 1, 1, 1], groups: 2, widthPerGroup: 4, numClasses: 5 });
  rx.tidy(() => void a.forward(rx.randn([2, 3, 32, 32], { seed: 8 }))); // non-trivial BN running stats
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'rx-sd-')), 'model.safetensors');
  await rx.io.saveSafetensors(file, a.stateDict());
  rx.manualSeed(9);
  const b = models.resnext({ layers: [1, 1, 1, 1], groups: 2, widthPerGroup: 4, numClasses: 5 });
  const loaded = await rx.io.loadSafetensors(file);
  b.loadStateDict(loaded, { strict: true });
  for (const t of Object.values(loaded)) t.dispose();
  a.eval();
  b.eval();
  rx.tidy(() => {
    const x = rx.randn([2, 3, 32, 32], { seed: 10 });
    expect(Array.from(b.forward(x).dataSync())).toEqual(Array.from(a.forward(x).dataSync()));
  });
  a.dispose();
  b.dispose();
});
