/**
 * `resnext predict`, `embed` and `export` (run in-process through the CLI's main) on a small
 * ResNeXt saved as safetensors: the printed classes are model.predict's, the .npy and JSON
 * embeddings are forwardFeatures of the preprocessed images (the .npy header follows NumPy's
 * format 1.0), the exported ONNX file runs in onnxruntime with our logits, and bad usage is a
 * clear error.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as rx from '../lib';
import { main } from '../lib/cli/main';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'rx-vision-cli-'));
const images = ['landscape.jpg', 'rgba.png'].map((f) => path.join(__dirname, 'fixtures', 'preprocess', f));
const MODEL = ['--model', 'resnext', '--layers', '1,1,1,1', '--cardinality', '8', '--width', '4', '--threads', '2'];
let weights: string;
let model: rx.models.ResNet;

beforeAll(async () => {
  rx.manualSeed(11);
  model = rx.models.resnext({ layers: [1, 1, 1, 1], groups: 8, widthPerGroup: 4 });
  weights = path.join(tmp, 'tiny.safetensors');
  await rx.io.saveSafetensors(weights, model.stateDict());
  model.eval();
});
afterAll(() => {
  model.dispose();
  fs.rmSync(tmp, { recursive: true, force: true });
});

async function run(argv: string[]): Promise<{ code: number; out: string }> {
  let out = '';
  const w = jest.spyOn(process.stdout, 'write').mockImplementation((s: string | Uint8Array) => {
    out += String(s);
    return true;
  });
  const e = jest.spyOn(process.stderr, 'write').mockImplementation(() => true);
  try {
    return { code: await main(argv), out };
  } finally {
    w.mockRestore();
    e.mockRestore();
  }
}

/** Reads a float32 .npy written by saveNpy, checking the header against the format spec. */
function readNpy(file: string): { shape: number[]; data: Float32Array } {
  const b = fs.readFileSync(file);
  expect([...b.subarray(0, 8)]).toEqual([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0]);
  const len = b.readUInt16LE(8);
  expect((10 + len) % 64).toBe(0);
  const header = b.subarray(10, 10 + len).toString('latin1');
  expect(header.endsWith('\n')).toBe(true);
  const m = /^\{'descr': '<f4', 'fortran_order': False, 'shape': \(([0-9, ]*)\), \} *\n$/.exec(header);
  expect(m).not.toBeNull();
  const shape = m![1].split(',').map((s) => s.trim()).filter(Boolean).map(Number);
  const body = b.subarray(10 + len);
  return { shape, data: new Float32Array(body.buffer.slice(body.byteOffset, body.byteOffset + body.byteLength)) };
}

test('predict prints model.predict top-k as JSON and as text', async () => {
  const r = await run(['predict', ...MODEL, '--weights', weights, '--topk', '3', '--json', ...images]);
  expect(r.code).toBe(0);
  const json = JSON.parse(r.out) as { results: { image: string; predictions: rx.vision.Prediction[] }[]; preprocessing: { resizeSize: number } };
  expect(json.preprocessing.resizeSize).toBe(232);
  const ours = await model.predict(images, { topk: 3 });
  expect(json.results.map((x) => x.image)).toEqual(images);
  json.results.forEach((x, i) => {
    expect(x.predictions.map((p) => [p.index, p.label])).toEqual(ours[i].map((p) => [p.index, p.label]));
    x.predictions.forEach((p, j) => {
      expect(p.probability).toBeCloseTo(ours[i][j].probability, 6);
    });
  });
  const text = await run(['predict', ...MODEL, '--weights', weights, images[0]]);
  const lines = text.out.trim().split('\n');
  expect(lines[0]).toBe(images[0]);
  expect(lines).toHaveLength(6);
  expect(lines[1]).toMatch(/^ +\d+\.\d\d% {2}.+ \(\d+\)$/);
});

test('embed writes forwardFeatures as .npy and JSON', async () => {
  const npy = path.join(tmp, 'emb.npy');
  const js = path.join(tmp, 'emb.json');
  expect((await run(['embed', ...MODEL, '--weights', weights, ...images, '--out', npy])).code).toBe(0);
  expect((await run(['embed', ...MODEL, '--weights', weights, ...images, '--out', js, '--batch-size', '1'])).code).toBe(0);
  const x = await rx.vision.preprocess(images);
  const ref = rx.tidy(() => rx.noGrad(() => model.forwardFeatures(x).dataSync() as Float32Array));
  x.dispose();
  const a = readNpy(npy);
  expect(a.shape).toEqual([2, 2048]);
  const j = JSON.parse(fs.readFileSync(js, 'utf8')) as { dim: number; images: string[]; embeddings: number[][] };
  expect(j.dim).toBe(2048);
  expect(j.images).toEqual(images);
  let maxA = 0, maxJ = 0;
  for (let i = 0; i < ref.length; i++) {
    maxA = Math.max(maxA, Math.abs(a.data[i] - ref[i]));
    maxJ = Math.max(maxJ, Math.abs(j.embeddings[Math.floor(i / 2048)][i % 2048] - ref[i]));
  }
  expect(maxA).toBeLessThan(1e-5);
  expect(maxJ).toBeLessThan(1e-5);
  expect(fs.readdirSync(tmp).filter((f) => f.endsWith('.tmp'))).toEqual([]);
});

test('export writes an ONNX file that onnxruntime runs with our logits', async () => {
  const file = path.join(tmp, 'tiny.onnx');
  const r = await run(['export', ...MODEL, '--weights', weights, '--input', '3x64x64', '--onnx', file, '--json']);
  expect(r.code).toBe(0);
  const info = JSON.parse(r.out) as { opset: number; inputShape: (string | number)[] };
  expect(info.opset).toBe(17);
  expect(info.inputShape).toEqual(['batch', 3, 64, 64]);
  const x = rx.randn([3, 3, 64, 64]);
  const input = path.join(tmp, 'x.bin');
  fs.writeFileSync(input, x.dataSync() as Float32Array);
  const ours = rx.tidy(() => rx.noGrad(() => model.forward(x).dataSync()));
  x.dispose();
  const jobs = path.join(tmp, 'jobs.json');
  fs.writeFileSync(jobs, JSON.stringify([{ input, dims: [3, 3, 64, 64], output: path.join(tmp, 'y.bin') }]));
  execFileSync(process.execPath, [path.join(__dirname, 'helpers', 'ort-run.js'), file, jobs]);
  const y = new Float32Array(fs.readFileSync(path.join(tmp, 'y.bin')).buffer.slice(0));
  let d = 0, m = 0;
  for (let i = 0; i < ours.length; i++) {
    d = Math.max(d, Math.abs(ours[i] - y[i]));
    m = Math.max(m, Math.abs(y[i]));
  }
  expect(d / m).toBeLessThan(1e-4);
});

test('usage errors and bad files', async () => {
  await expect(main(['predict', ...MODEL, images[0]])).rejects.toMatchObject({ code: 'ERR_ARG', message: expect.stringContaining('--weights') });
  await expect(main(['predict', ...MODEL, '--weights', weights])).rejects.toMatchObject({ code: 'ERR_ARG' });
  await expect(main(['embed', ...MODEL, images[0], '--out', path.join(tmp, 'x.txt')])).rejects.toMatchObject({ code: 'ERR_ARG' });
  await expect(main(['export', ...MODEL])).rejects.toMatchObject({ code: 'ERR_ARG', message: expect.stringContaining('--onnx') });
  await expect(main(['predict', '--model', 'resnext29', '--weights', weights, images[0]])).rejects.toMatchObject({ code: 'ERR_ARG' });
  await expect(run(['predict', ...MODEL, '--weights', weights, path.join(tmp, 'missing.jpg')])).rejects.toMatchObject({ code: 'ERR_IO' });
  await expect(run(['predict', ...MODEL, '--weights', path.join(tmp, 'missing.safetensors'), images[0]])).rejects.toMatchObject({ code: 'ERR_IO' });
});
