/**
 * Builders that take weights: `await models.resnext({ ..., weights })` and the named builders,
 * from .pth (io.saveTorch / torch.save) and .safetensors files; strict loading that names every
 * bad key; a replaced `fc` head when numClasses differs from the file's.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as rx from '../lib';

const tiny = { layers: [1, 1, 1, 1], groups: 8, widthPerGroup: 4 };
let dir: string;
let source: rx.models.ResNet;
let pth: string;
let st: string;
let x: rx.Tensor;

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'resnext-pretrained-'));
  rx.manualSeed(11);
  source = rx.models.resnext({ ...tiny, numClasses: 10 });
  // Non-trivial BN statistics, so eval-mode outputs depend on every buffer.
  for (const [name, t] of Object.entries(source.stateDict())) {
    if (name.endsWith('running_var')) t.copy_(rx.rand([...t.shape], { low: 0.5, high: 1.5 }));
    if (name.endsWith('running_mean') || name.endsWith('bn3.weight')) t.copy_(rx.rand([...t.shape], { low: -0.5, high: 0.5 }));
  }
  source.eval();
  pth = path.join(dir, 'tiny.pth');
  st = path.join(dir, 'tiny.safetensors');
  await rx.io.saveTorch(pth, source.stateDict());
  await rx.io.saveSafetensors(st, source.stateDict());
  x = rx.randn([2, 3, 32, 32]);
});
afterAll(() => {
  source.dispose();
  x.dispose();
  fs.rmSync(dir, { recursive: true, force: true });
});

const logits = (m: rx.nn.Module) => rx.tidy(() => Array.from(rx.noGrad(() => m.eval().forward(x)).dataSync()));

test.each([
  ['.pth', () => pth],
  ['.safetensors', () => st],
])('resnext({ layers: [1,1,1,1], groups: 8, widthPerGroup: 4, numClasses: 10, weights: %s }) loads strictly and gives the same logits', async (_, file) => {
  const m = await rx.models.resnext({ ...tiny, numClasses: 10, weights: file() });
  try {
    expect(m).toBeInstanceOf(rx.models.ResNet);
    expect(logits(m)).toEqual(logits(source));
  } finally {
    m.dispose();
  }
});

test('without numClasses the model takes the file\'s class count', async () => {
  const m = await rx.models.resnext({ ...tiny, weights: pth });
  expect(m.config.numClasses).toBe(10);
  expect(logits(m)).toEqual(logits(source));
  m.dispose();
});

test('a different numClasses replaces the fc head (fresh init) and loads the rest strictly', async () => {
  const m = await rx.models.resnext({ ...tiny, numClasses: 3, weights: pth });
  try {
    expect(m.fc.weight.shape).toEqual([3, 2048]);
    const a = m.stateDict();
    const b = source.stateDict();
    for (const k of Object.keys(b)) {
      if (k.startsWith('fc.')) continue;
      const same = Buffer.from(a[k].dataSync().buffer).equals(Buffer.from(b[k].dataSync().buffer));
      expect([k, same]).toEqual([k, true]);
    }
    // The backbone's features are the file's.
    const f = (n: rx.models.ResNet) => rx.tidy(() => Array.from(rx.noGrad(() => n.eval().forwardFeatures(x)).dataSync()));
    expect(f(m)).toEqual(f(source));
  } finally {
    m.dispose();
  }
});

test('the sync builders are unchanged, and a named builder with weights is async', async () => {
  const m = rx.models.resnext({ ...tiny, numClasses: 4 });
  expect(m).toBeInstanceOf(rx.models.ResNet);
  m.dispose();
  const p = rx.models.resnext50_32x4d({ weights: pth });
  expect(p).toBeInstanceOf(Promise);
  // The tiny file lacks resnext50's blocks: a strict error that names them.
  const e = await p.then(() => null, (err: unknown) => err as rx.ResnextError);
  expect(e).toBeInstanceOf(rx.ResnextError);
  expect(e!.code).toBe('ERR_ARG');
  expect(e!.message).toContain('resnext50_32x4d: weights');
  expect(e!.message).toContain(pth);
  expect(e!.message).toMatch(/missing: layer1\.1\.conv1\.weight/);
});

test('missing, unexpected and mis-shaped keys are named; the model is not returned', async () => {
  const sd = { ...source.stateDict() };
  delete sd['layer2.0.bn1.running_mean'];
  const extra = rx.zeros([3]);
  sd['layer9.weight'] = extra;
  const bad = path.join(dir, 'bad.pth');
  await rx.io.saveTorch(bad, sd);
  extra.dispose();
  await expect(rx.models.resnext({ ...tiny, weights: bad })).rejects.toMatchObject({
    code: 'ERR_ARG',
    message: expect.stringMatching(/missing: layer2\.0\.bn1\.running_mean; unexpected: layer9\.weight/),
  });
  // groups 4 instead of 8: every grouped conv's shape differs (not just the head).
  await expect(rx.models.resnext({ layers: [1, 1, 1, 1], groups: 4, widthPerGroup: 4, weights: pth })).rejects.toMatchObject({
    code: 'ERR_SHAPE',
    message: expect.stringMatching(/shape mismatch: layer1\.0\.conv1\.weight \(model \[16, 64, 1, 1\], file \[32, 64, 1, 1\]\)/),
  });
  await expect(rx.models.resnext({ ...tiny, weights: path.join(dir, 'nope.pth') })).rejects.toMatchObject({ code: 'ERR_IO' });
});

// With the development venv: torchvision's resnext50_32x4d state dict, written by torch.save, gives
// torchvision's logits through `await models.resnext50_32x4d({ weights })`.
const venv = path.join(__dirname, '..', '.cache', 'torch-venv', 'bin', 'python');
(fs.existsSync(venv) ? test : test.skip)('resnext50_32x4d({ weights: torchvision .pth }) matches torchvision logits', async () => {
  const file = path.join(dir, 'r50.pth');
  const ref = path.join(dir, 'r50_io.safetensors');
  execFileSync(venv, ['-c', `
import torch, torchvision, safetensors.torch, sys
torch.manual_seed(0)
m = torchvision.models.resnext50_32x4d(weights=None).eval()
for mod in m.modules():
    if isinstance(mod, torch.nn.BatchNorm2d):
        mod.running_var.uniform_(0.5, 1.5); mod.running_mean.uniform_(-0.2, 0.2)
torch.save(m.state_dict(), sys.argv[1])
x = torch.randn(1, 3, 64, 64)
with torch.no_grad(): y = m(x)
safetensors.torch.save_file({'input': x, 'logits': y}, sys.argv[2])`, file, ref]);
  const m = await rx.models.resnext50_32x4d({ weights: file });
  const io = await rx.io.loadSafetensors(ref);
  try {
    const y = rx.tidy(() => Array.from(rx.noGrad(() => m.eval().forward(io.input)).dataSync()));
    const want = io.logits.dataSync();
    let md = 0, mx = 0;
    for (let i = 0; i < want.length; i++) {
      md = Math.max(md, Math.abs(y[i] - want[i]));
      mx = Math.max(mx, Math.abs(want[i]));
    }
    expect(md).toBeLessThan(1e-4 * Math.max(1, mx));
  } finally {
    m.dispose();
    for (const t of Object.values(io)) t.dispose();
  }
}, 60000);
