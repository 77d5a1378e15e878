/** safetensors load/save (every dtype, the reference writer's files, corrupt files) and the atomic writer. */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as ts from 'typescript';
import * as rx from '../lib';
import * as io from '../lib/io';

let dir: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'resnext-io-'));
});
afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

async function expectIoError(p: Promise<unknown> | (() => unknown), ...parts: (RegExp | string)[]): Promise<rx.ResnextError> {
  let err: unknown;
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(rx.ResnextError);
  const e = err as rx.ResnextError;
  expect(e.code).toBe('ERR_IO');
  for (const part of parts) {
    if (typeof part === 'string') expect(e.message).toContain(part);
    else expect(e.message).toMatch(part);
  }
  return e;
}

/** A safetensors file from a header object and raw data bytes (the header JSON as given). */
function craft(file: string, header: unknown, data: Uint8Array | number[], opts: { headerText?: string; lengthField?: bigint } = {}): string {
  const json = Buffer.from(opts.headerText ?? JSON.stringify(header), 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(opts.lengthField ?? BigInt(json.length));
  const p = path.join(dir, file);
  fs.writeFileSync(p, Buffer.concat([len, json, Buffer.from(data as Uint8Array)]));
  return p;
}

function f32Bytes(v: number[]): Buffer {
  return Buffer.from(new Float32Array(v).buffer);
}

describe('safetensors round trip', () => {
  const values = {
    f32: [1.5, -2.25, 3.4028234663852886e38, -0, 1e-40, Number.POSITIVE_INFINITY],
    f64: [Math.PI, -1e300, 5e-324, 0.1],
    i32: [0, 1, -1, 2147483647, -2147483648, 42],
    bf16: [1, -2.5, 0.0078125, 3.3895313892515355e38, -0.5, 96],
  };

  function make(): Record<string, rx.Tensor> {
    return {
      'layer1.0.conv1.weight': rx.tensor(values.f32, [2, 1, 3, 1]),
      'double': rx.tensor(values.f64, [2, 2], { dtype: 'float64' }),
      'index': rx.tensor(values.i32, [3, 2], { dtype: 'int32' }),
      'half.bf16': rx.cast(rx.tensor(values.bf16, [6]), 'bfloat16'),
      'scalar': rx.tensor(7.25),
      'scalar_i': rx.tensor(-9, [], { dtype: 'int32' }),
      'empty': rx.zeros([0, 3]),
      'empty64': rx.zeros([4, 0], { dtype: 'float64' }),
    };
  }

  async function check(loaded: Record<string, rx.Tensor>): Promise<void> {
    expect(Object.keys(loaded).sort()).toEqual(['double', 'empty', 'empty64', 'half.bf16', 'index', 'layer1.0.conv1.weight', 'scalar', 'scalar_i']);
    const w = loaded['layer1.0.conv1.weight'];
    expect([w.dtype, [...w.shape]]).toEqual(['float32', [2, 1, 3, 1]]);
    expect(Array.from(await w.data())).toEqual(Array.from(new Float32Array(values.f32)));
    expect(Object.is((await w.data())[3], -0)).toBe(true);
    expect(loaded.double.dtype).toBe('float64');
    expect(Array.from(await loaded.double.data())).toEqual(values.f64);
    expect(loaded.index.dtype).toBe('int32');
    expect(Array.from(await loaded.index.data())).toEqual(values.i32);
    const bf = loaded['half.bf16'];
    expect(bf.dtype).toBe('bfloat16');
    const bf32 = rx.cast(bf, 'float32');
    expect(Array.from(await bf32.data())).toEqual(values.bf16);
    expect([...loaded.scalar.shape]).toEqual([]);
    expect(loaded.scalar.item()).toBe(7.25);
    expect(loaded.scalar_i.dtype).toBe('int32');
    expect(loaded.scalar_i.item()).toBe(-9);
    expect([...loaded.empty.shape]).toEqual([0, 3]);
    expect([...loaded.empty64.shape]).toEqual([4, 0]);
    expect(loaded.empty64.dtype).toBe('float64');
  }

  test('every dtype, scalar and empty shapes (async)', async () => {
    const p = path.join(dir, 'all.safetensors');
    await io.saveSafetensors(p, make());
    await check(await io.loadSafetensors(p));
  });

  test('every dtype, scalar and empty shapes (sync), from a Map', async () => {
    const p = path.join(dir, 'all-sync.safetensors');
    io.saveSafetensorsSync(p, new Map(Object.entries(make())));
    await check(io.loadSafetensorsSync(p));
  });

  test('file layout: sorted keys, 8-byte padded header, aligned data, metadata, exact bf16 bits', async () => {
    const p = path.join(dir, 'layout.safetensors');
    const t = {
      z: rx.tensor([1, 2, 3], [3], { dtype: 'int32' }),
      b: rx.cast(rx.tensor([1, -3, 2.5]), 'bfloat16'),
      a: rx.tensor([0.5], [1], { dtype: 'float64' }),
    };
    await io.saveSafetensors(p, t, { format: 'pt', epoch: '3' });
    const raw = fs.readFileSync(p);
    const n = Number(raw.readBigUInt64LE(0));
    expect(n % 8).toBe(0);
    const text = raw.subarray(8, 8 + n).toString('utf8');
    expect(text.slice(text.trimEnd().length)).toMatch(/^ {0,7}$/);
    const header = JSON.parse(text);
    expect(Object.keys(header)).toEqual(['__metadata__', 'a', 'b', 'z']);
    expect(header.__metadata__).toEqual({ format: 'pt', epoch: '3' });
    expect(header.a).toEqual({ dtype: 'F64', shape: [1], data_offsets: [0, 8] });
    expect(header.z).toEqual({ dtype: 'I32', shape: [3], data_offsets: [8, 20] });
    expect(header.b).toEqual({ dtype: 'BF16', shape: [3], data_offsets: [20, 26] });
    expect(raw.length).toBe(8 + n + 26);
    const data = raw.subarray(8 + n);
    // bfloat16: 1 = 0x3f80, -3 = 0xc040, 2.5 = 0x4020, little-endian
    expect([...data.subarray(20, 26)]).toEqual([0x80, 0x3f, 0x40, 0xc0, 0x20, 0x40]);
    expect(data.readInt32LE(8 + 8)).toBe(3);
    const h = io.readSafetensorsHeader(p);
    expect(h.metadata).toEqual({ format: 'pt', epoch: '3' });
    expect(h.tensors.b.dtype).toBe('BF16');
    expect(h.dataStart).toBe(8 + n);
  });

  test('bad arguments are ERR_ARG', async () => {
    const p = path.join(dir, 'bad.safetensors');
    await expect(io.saveSafetensors(p, { a: 3 as unknown as rx.Tensor })).rejects.toMatchObject({ code: 'ERR_ARG' });
    await expect(io.saveSafetensors(p, { a: rx.ones([1]) }, { x: 1 as unknown as string })).rejects.toMatchObject({ code: 'ERR_ARG' });
    await expect(io.saveSafetensors(p, { __metadata__: rx.ones([1]) })).rejects.toMatchObject({ code: 'ERR_ARG' });
    const gone = rx.ones([2]);
    gone.dispose();
    await expect(io.saveSafetensors(p, { gone })).rejects.toMatchObject({ code: 'ERR_DISPOSED' });
    expect(fs.existsSync(p)).toBe(false);
  });

  test('an entry named __proto__ is kept, on load and on save (plain assignment would drop it)', async () => {
    const h = '{"__proto__":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}';
    const b = Buffer.alloc(8 + h.length + 8);
    b.writeBigUInt64LE(BigInt(h.length));
    b.write(h, 8);
    b.writeFloatLE(1.5, 8 + h.length);
    b.writeFloatLE(2.5, 12 + h.length);
    const p = path.join(dir, 'proto.safetensors');
    fs.writeFileSync(p, b);
    const r = await io.loadSafetensors(p);
    expect(Object.keys(r)).toEqual(['__proto__', 'a']);
    expect(Object.getPrototypeOf(r)).toBe(Object.prototype);
    expect(r.__proto__.item()).toBe(1.5);
    const q = path.join(dir, 'proto2.safetensors');
    await io.saveSafetensors(q, r);
    const back = io.loadSafetensorsSync(q);
    expect(Object.keys(back)).toEqual(['__proto__', 'a']);
    expect([back.__proto__.item(), back.a.item()]).toEqual([1.5, 2.5]);
  });
});

describe('files written by the reference implementation', () => {
  // test/fixtures/reference.safetensors: scripts/fixtures/safetensors_reference.py (Python safetensors 0.8.0)
  const fixture = path.join(__dirname, 'fixtures', 'reference.safetensors');

  test('loads every tensor, I64 narrowed to int32, F16 widened to float32', async () => {
    const t = await io.loadSafetensors(fixture);
    expect(Object.keys(t).sort()).toEqual(['bn.num_batches_tracked', 'bn.running_var', 'conv.weight', 'empty', 'half', 'index']);
    expect(t['conv.weight'].dtype).toBe('float32');
    expect([...t['conv.weight'].shape]).toEqual([2, 1, 2, 2]);
    expect(Array.from(await t['conv.weight'].data())).toEqual([-1, -0.5, 0, 0.5, 1, 1.5, 2, 2.5]);
    expect(t['bn.running_var'].dtype).toBe('float64');
    expect(Array.from(await t['bn.running_var'].data())).toEqual([0.25, 1, 4]);
    const nbt = t['bn.num_batches_tracked'];
    expect([nbt.dtype, [...nbt.shape], nbt.item()]).toEqual(['int32', [], 12345]);
    expect(Array.from(await t.index.data())).toEqual([1, -2, 3, -4]);
    expect([...t.index.shape]).toEqual([2, 2]);
    expect(t.half.dtype).toBe('float32');
    expect(Array.from(await t.half.data())).toEqual([1.5, -2.25, 65504]);
    expect([...t.empty.shape]).toEqual([0, 3]);
    expect(io.readSafetensorsHeader(fixture).metadata).toEqual({ format: 'np', source: 'scripts/fixtures/safetensors_reference.py' });
  });

  test('hand-made file in the reference layout: BF16, I64, U8, BOOL, F16 specials', async () => {
    const i64 = Buffer.alloc(16);
    i64.writeBigInt64LE(-5n, 0);
    i64.writeBigInt64LE(2147483647n, 8);
    const bf16 = Buffer.from([0x80, 0x3f, 0x40, 0xc0]); // 1, -3
    const f16 = Buffer.alloc(6);
    f16.writeUInt16LE(0x7c00, 0); // +inf
    f16.writeUInt16LE(0x0001, 2); // smallest subnormal 2^-24
    f16.writeUInt16LE(0xc000, 4); // -2
    const data = Buffer.concat([i64, bf16, f16, Buffer.from([200, 0, 1, 1])]);
    const p = craft('mixed.safetensors', {
      i: { dtype: 'I64', shape: [2], data_offsets: [0, 16] },
      b: { dtype: 'BF16', shape: [2, 1], data_offsets: [16, 20] },
      h: { dtype: 'F16', shape: [3], data_offsets: [20, 26] },
      u: { dtype: 'U8', shape: [2], data_offsets: [26, 28] },
      q: { dtype: 'BOOL', shape: [2], data_offsets: [28, 30] },
    }, data);
    const t = io.loadSafetensorsSync(p);
    expect(Array.from(await t.i.data())).toEqual([-5, 2147483647]);
    expect(t.b.dtype).toBe('bfloat16');
    expect(Array.from(await rx.cast(t.b, 'float32').data())).toEqual([1, -3]);
    expect(Array.from(await t.h.data())).toEqual([Number.POSITIVE_INFINITY, 2 ** -24, -2]);
    expect(Array.from(await t.u.data())).toEqual([200, 0]);
    expect(Array.from(await t.q.data())).toEqual([1, 1]);
  });

  test('an I64 value beyond int32 is ERR_IO naming the file and the tensor', async () => {
    const i64 = Buffer.alloc(16);
    i64.writeBigInt64LE(1n, 0);
    i64.writeBigInt64LE(2147483648n, 8);
    const p = craft('big-i64.safetensors', { steps: { dtype: 'I64', shape: [2], data_offsets: [0, 16] } }, i64);
    const before = rx.memory().tensors;
    await expectIoError(io.loadSafetensors(p), p, /"steps"/, /fit int32/, /2147483648/);
    expect(rx.memory().tensors).toBeLessThanOrEqual(before); // GC may free unrelated garbage meanwhile
  });
});

describe('corrupt safetensors files give ERR_IO naming the file and the problem', () => {
  const good = { a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [1], data_offsets: [8, 12] } };
  const data = f32Bytes([1, 2, 3]);

  test('a valid crafted file loads (the baseline for the corrupt variants)', async () => {
    const t = await io.loadSafetensors(craft('ok.safetensors', good, data));
    expect(Array.from(await t.a.data())).toEqual([1, 2]);
    expect(Array.from(await t.b.data())).toEqual([3]);
  });

  test('missing file', async () => {
    const p = path.join(dir, 'nope.safetensors');
    await expectIoError(io.loadSafetensors(p), p, /no such file/);
    await expectIoError(() => io.loadSafetensorsSync(p), p, /no such file/);
    await expectIoError(() => io.readSafetensorsHeader(p), p);
  });

  test('shorter than the length field', async () => {
    const p = path.join(dir, 'tiny.safetensors');
    fs.writeFileSync(p, Buffer.from([1, 2, 3]));
    await expectIoError(io.loadSafetensors(p), p, /at least 8 bytes/, /truncated/);
  });

  test('header length beyond the file', async () => {
    const p = craft('hlen.safetensors', good, data, { lengthField: 1n << 40n });
    await expectIoError(io.loadSafetensors(p), p, /header length/, /truncated/);
  });

  test('malformed JSON header, or not an object', async () => {
    const p = craft('json.safetensors', null, data, { headerText: '{"a": {"dtype": "F32",' });
    await expectIoError(io.loadSafetensors(p), p, /malformed JSON/);
    const q = craft('array.safetensors', null, [], { headerText: '[1, 2]' });
    await expectIoError(io.loadSafetensors(q), q, /JSON object/);
  });

  test('unknown dtype', async () => {
    const p = craft('dtype.safetensors', { ...good, b: { dtype: 'F8_E4M3', shape: [4], data_offsets: [8, 12] } }, data);
    await expectIoError(io.loadSafetensors(p), p, /supported dtype/, /"b"/, /F8_E4M3/);
  });

  test('shape and offsets disagree', async () => {
    const p = craft('size.safetensors', { ...good, b: { dtype: 'F32', shape: [2], data_offsets: [8, 12] } }, data);
    await expectIoError(io.loadSafetensors(p), p, /8 bytes for tensor "b"/, /\[8, 12\] \(4 bytes\)/);
    const q = craft('shape.safetensors', { ...good, b: { dtype: 'F32', shape: [-1], data_offsets: [8, 12] } }, data);
    await expectIoError(io.loadSafetensors(q), q, /shape/, /"b"/);
  });

  test('overlapping, gapped and reversed offsets', async () => {
    const overlap = craft('overlap.safetensors', {
      a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] },
    }, data);
    await expectIoError(io.loadSafetensors(overlap), overlap, /non-overlapping/, /"b"/);
    const gap = craft('gap.safetensors', {
      a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] }, b: { dtype: 'F32', shape: [1], data_offsets: [8, 12] },
    }, data);
    await expectIoError(io.loadSafetensors(gap), gap, /contiguous/, /"b"/);
    const reversed = craft('reversed.safetensors', { ...good, b: { dtype: 'F32', shape: [0], data_offsets: [12, 8] } }, data);
    await expectIoError(io.loadSafetensors(reversed), reversed, /begin <= end/, /\[12, 8\]/);
  });

  test('data offsets beyond the file (truncated) and trailing bytes', async () => {
    const p = craft('trunc.safetensors', good, data.subarray(0, 10));
    await expectIoError(io.loadSafetensors(p), p, /12 bytes/, /10 bytes: the file is truncated/);
    await expectIoError(() => io.loadSafetensorsSync(p), p, /truncated/);
    // a real file cut short
    const full = path.join(dir, 'full.safetensors');
    await io.saveSafetensors(full, { w: rx.randn([16, 16]) });
    const cut = path.join(dir, 'cut.safetensors');
    fs.writeFileSync(cut, fs.readFileSync(full).subarray(0, fs.statSync(full).size - 100));
    await expectIoError(io.loadSafetensors(cut), cut, /truncated/);
    const extra = craft('extra.safetensors', good, Buffer.concat([data, Buffer.from([0, 0])]));
    await expectIoError(io.loadSafetensors(extra), extra, /trailing/);
  });

  test('bad metadata', async () => {
    const p = craft('meta.safetensors', { __metadata__: { a: 1 }, ...good }, data);
    await expectIoError(io.loadSafetensors(p), p, /__metadata__/);
  });
});

describe('writeFileAtomic', () => {
  const leftovers = (d: string) => fs.readdirSync(d).filter((f) => f.endsWith('.tmp'));

  test('writes strings, buffers and chunk iterables; replaces the previous file', async () => {
    const d = fs.mkdtempSync(path.join(dir, 'atomic-'));
    const p = path.join(d, 'f.txt');
    await io.writeFileAtomic(p, 'first');
    expect(fs.readFileSync(p, 'utf8')).toBe('first');
    await io.writeFileAtomic(p, [Buffer.from('a'), new Uint8Array([98, 99])]);
    expect(fs.readFileSync(p, 'utf8')).toBe('abc');
    io.writeFileAtomicSync(p, Buffer.from('sync'));
    expect(fs.readFileSync(p, 'utf8')).toBe('sync');
    expect(leftovers(d)).toEqual([]);
  });

  test('a write that fails midway leaves the previous file and no temp file', async () => {
    const d = fs.mkdtempSync(path.join(dir, 'atomic-'));
    const p = path.join(d, 'model.safetensors');
    await io.saveSafetensors(p, { w: rx.tensor([1, 2, 3]) });
    const before = fs.readFileSync(p);
    async function* failing(): AsyncGenerator<Uint8Array> {
      yield Buffer.alloc(1 << 20, 7);
      throw new Error('disk on fire');
    }
    await expectIoError(io.writeFileAtomic(p, failing()), p, /disk on fire/);
    function* failingSync(): Generator<Uint8Array> {
      yield Buffer.alloc(1000, 1);
      throw new Error('power cut');
    }
    await expectIoError(() => io.writeFileAtomicSync(p, failingSync()), p, /power cut/);
    expect(fs.readFileSync(p).equals(before)).toBe(true);
    expect(Array.from(await (await io.loadSafetensors(p)).w.data())).toEqual([1, 2, 3]);
    expect(leftovers(d)).toEqual([]);
  });

  test('a failing rename leaves the target and removes the temp file', async () => {
    const d = fs.mkdtempSync(path.join(dir, 'atomic-'));
    const target = path.join(d, 'occupied');
    fs.mkdirSync(target);
    fs.writeFileSync(path.join(target, 'keep'), 'x');
    await expectIoError(io.writeFileAtomic(target, 'data'), target);
    expect(fs.readFileSync(path.join(target, 'keep'), 'utf8')).toBe('x');
    expect(leftovers(d)).toEqual([]);
    await expectIoError(io.writeFileAtomic(path.join(d, 'no', 'such', 'dir'), 'x'), /no[/\\]such[/\\]dir/);
  });

  test('a process killed in the middle of a save leaves the previous file intact', async () => {
    // The child runs lib/io/atomic.ts (transpiled), starts a save, reports, and is SIGKILLed.
    const d = fs.mkdtempSync(path.join(dir, 'kill-'));
    const lib = path.join(__dirname, '..', 'lib');
    for (const rel of ['io/atomic.ts', 'native/errors.ts']) {
      const js = ts.transpileModule(fs.readFileSync(path.join(lib, rel), 'utf8'), {
        compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true },
      }).outputText;
      fs.mkdirSync(path.join(d, 'js', path.dirname(rel)), { recursive: true });
      fs.writeFileSync(path.join(d, 'js', rel.replace(/\.ts$/, '.js')), js);
    }
    const target = path.join(d, 'checkpoint.bin');
    fs.writeFileSync(target, 'previous checkpoint');
    const script = `
      const { writeFileAtomic } = require(${JSON.stringify(path.join(d, 'js', 'io', 'atomic.js'))});
      async function* chunks() {
        yield Buffer.alloc(1 << 20, 65);
        process.stdout.write('midway\\n');
        await new Promise(() => setInterval(() => {}, 1000));
      }
      writeFileAtomic(${JSON.stringify(target)}, chunks());
    `;
    const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve, reject) => {
      child.stdout.on('data', (b: Buffer) => {
        if (b.toString().includes('midway')) resolve();
      });
      child.on('exit', (code) => reject(new Error(`child exited early with ${code}`)));
    });
    const partial = leftovers(d);
    expect(partial.length).toBe(1); // the new data went to a temp file...
    expect(fs.statSync(path.join(d, partial[0])).size).toBe(1 << 20);
    const exited = new Promise((r) => child.on('exit', r));
    child.kill('SIGKILL');
    await exited;
    expect(fs.readFileSync(target, 'utf8')).toBe('previous checkpoint'); // ...never over the target
    await io.writeFileAtomic(target, 'next');
    expect(fs.readFileSync(target, 'utf8')).toBe('next');
  });
});
