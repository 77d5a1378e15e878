/**
 * io.loadTorch against files written by torch.save (test/fixtures/torch, made by
 * scripts/fixtures/torch_checkpoints.py): zip, legacy and protocol-4 pickles; every storage
 * dtype; offsets, strides and shared storages; checkpoints with 'module.' prefixes; a
 * torchvision Bottleneck that must give PyTorch's output; and pickles that try to run code.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as rx from '../lib';
import { loadSafetensors, loadTorch, openTorch, saveSafetensors, saveTorch } from '../lib/io';

const dir = path.join(__dirname, 'fixtures', 'torch');
const fx = (f: string) => path.join(dir, f);
const expected = JSON.parse(fs.readFileSync(fx('expected.json'), 'utf8')) as Record<string, { shape: number[]; dtype: string; values: number[] }>;

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'resnext-torch-'));
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

const dispose = (d: Record<string, rx.Tensor>) => {
  for (const t of Object.values(d)) t.dispose();
};

async function ioError(p: Promise<unknown>): Promise<rx.ResnextError> {
  let err: unknown;
  try {
    await p;
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(rx.ResnextError);
  expect((err as rx.ResnextError).code).toBe('ERR_IO');
  return err as rx.ResnextError;
}

describe.each(['dtypes_zip.pth', 'dtypes_legacy.pth', 'dtypes_proto4.pth'])('%s', (file) => {
  test('every tensor has the shape and values torch saved (floats as float32, integers as int32)', async () => {
    const before = rx.memory().tensors;
    const d = await loadTorch(fx(file));
    try {
      expect(Object.keys(d)).toEqual(Object.keys(expected));
      for (const [name, e] of Object.entries(expected)) {
        const t = d[name];
        expect([name, t.shape]).toEqual([name, e.shape]);
        const isInt = ['int64', 'int32', 'uint8', 'bool'].includes(e.dtype);
        expect([name, t.dtype]).toEqual([name, isInt ? 'int32' : 'float32']);
        const got = Array.from(t.dataSync());
        const want = isInt ? e.values : Array.from(Float32Array.from(e.values));
        expect([name, got]).toEqual([name, want]);
      }
    } finally {
      dispose(d);
    }
    expect(rx.memory().tensors).toBeLessThanOrEqual(before); // GC may free unrelated garbage meanwhile
  });

  test("dtype: 'preserve' keeps float64 and bfloat16; 'float64' widens every float", async () => {
    const p = await loadTorch(fx(file), { dtype: 'preserve' });
    try {
      expect(p.f64.dtype).toBe('float64');
      expect(Array.from(p.f64.dataSync())).toEqual(expected.f64.values);
      expect(p.bf16.dtype).toBe('bfloat16');
      expect(p.f16.dtype).toBe('float32');
      expect(p.i64.dtype).toBe('int32');
    } finally {
      dispose(p);
    }
    const w = await loadTorch(fx(file), { dtype: 'float64' });
    try {
      for (const k of ['f32', 'f64', 'f16', 'bf16', 'transposed']) expect([k, w[k].dtype]).toEqual([k, 'float64']);
      expect(Array.from(w.f64.dataSync())).toEqual(expected.f64.values);
    } finally {
      dispose(w);
    }
  });
});

test('views: storage offset, a non-contiguous transpose, a strided slice and two tensors on one storage are materialised', async () => {
  const d = await loadTorch(fx('dtypes_zip.pth'));
  try {
    expect(d.transposed.shape).toEqual([5, 3]);
    expect(d.shared_a.shape).toEqual([2, 5]);
    expect(Array.from(d.shared_b.dataSync())).toEqual([5, 5.5, 6, 6.5, 7, 7.5, 8, 8.5, 9, 9.5]);
    expect(Array.from(d.strided.dataSync())).toEqual(Array.from(Float32Array.from(expected.strided.values)));
    expect(Array.from(d.expanded.dataSync())).toEqual([1, 2, 3, 1, 2, 3]);
    // Separate tensors: writing one leaves its storage-sibling alone.
    d.shared_a.fill_(0);
    expect(d.shared_b.dataSync()[0]).toBe(5);
  } finally {
    dispose(d);
  }
});

test('openTorch: names, shapes and dtypes from the pickle alone; read() hands over tensors one by one', async () => {
  const before = rx.memory().tensors;
  const r = await openTorch(fx('checkpoint_model_legacy.pth'));
  try {
    expect(rx.memory().tensors).toBeLessThanOrEqual(before); // GC may free unrelated garbage meanwhile
    expect(r.entries[0]).toEqual({ name: 'conv1.weight', shape: [16, 32, 1, 1], fileDType: 'float32', dtype: 'float32' });
    expect(r.entries.find((e) => e.name === 'bn1.num_batches_tracked')).toMatchObject({ shape: [], fileDType: 'int64', dtype: 'int32' });
    const names: string[] = [];
    await r.read((name, t) => {
      names.push(name);
      t.dispose();
    });
    expect(names.sort()).toEqual(r.entries.map((e) => e.name).sort());
  } finally {
    await r.close();
  }
  expect(rx.memory().tensors).toBeLessThanOrEqual(before); // GC may free unrelated garbage meanwhile
});

test('nn.Parameter values (torch._utils._rebuild_parameter) load like tensors', async () => {
  const d = await loadTorch(fx('parameters_zip.pth'));
  const e = await loadSafetensors(fx('parameters_expected.safetensors'));
  try {
    expect(Object.keys(d).sort()).toEqual(Object.keys(e).sort());
    for (const k of Object.keys(e)) expect(Array.from(d[k].dataSync())).toEqual(Array.from(e[k].dataSync()));
  } finally {
    dispose(d);
    dispose(e);
  }
});

describe('a torchvision Bottleneck saved with torch.save', () => {
  const build = () => {
    const down = new rx.nn.Sequential(rx.models.conv1x1(32, 64, 2), new rx.nn.BatchNorm2d(64));
    return new rx.models.Bottleneck(32, 16, 2, down, 4, 16);
  };
  const maxDiff = (a: rx.Tensor, b: rx.Tensor) => {
    const x = a.dataSync(), y = b.dataSync();
    let m = 0;
    for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i] - y[i]));
    return m;
  };

  test.each(['bottleneck.pth', 'checkpoint_state_dict.pth', 'checkpoint_model_legacy.pth'])(
    '%s loads strictly into our Bottleneck and gives PyTorch eval output (1e-4)',
    async (file) => {
      const sd = await loadTorch(fx(file));
      const io = await loadSafetensors(fx('bottleneck_io.safetensors'));
      const block = build();
      try {
        block.loadStateDict(sd, { strict: true });
        expect(sd['bn1.num_batches_tracked'].item()).toBe(7);
        block.eval();
        rx.tidy(() => expect(maxDiff(block.forward(io.input), io.output_eval)).toBeLessThan(1e-4));
      } finally {
        block.dispose();
        dispose(sd);
        dispose(io);
      }
    },
  );

  test('stripPrefix: false keeps the module. prefix; key selects another entry', async () => {
    const sd = await loadTorch(fx('checkpoint_state_dict.pth'), { stripPrefix: false });
    expect(Object.keys(sd).every((k) => k.startsWith('module.'))).toBe(true);
    dispose(sd);
    const again = await loadTorch(fx('checkpoint_state_dict.pth'), { key: 'state_dict' });
    expect(Object.keys(again)[0]).toBe('conv1.weight');
    dispose(again);
    const e = await ioError(loadTorch(fx('checkpoint_state_dict.pth'), { key: 'optimizer' }));
    expect(e.message).toContain('"optimizer"');
  });
});

describe('refuses pickles that would run code, and executes nothing', () => {
  test.each([
    ['malicious_system.pth', 'posix.system'],
    ['malicious_eval_legacy.pth', 'builtins.eval'],
  ])('%s -> ERR_IO naming the file and %s', async (file, global) => {
    const e = await ioError(loadTorch(fx(file)));
    expect(e.message).toContain(fx(file));
    expect(e.message).toContain(`global "${global}"`);
    expect(e.message).toContain('nothing in the file was executed');
  });

  /** A zip-format torch file whose data.pkl is `pickle` (written with yazl, as torch lays it out). */
  async function craft(name: string, pickle: Buffer): Promise<string> {
    const { ZipFile } = await import('yazl');
    const z = new ZipFile();
    z.addBuffer(pickle, 'archive/data.pkl', { compress: false });
    z.addBuffer(Buffer.from('little'), 'archive/byteorder', { compress: false });
    z.end();
    const chunks: Buffer[] = [];
    for await (const c of z.outputStream as AsyncIterable<Buffer>) chunks.push(c);
    const p = path.join(tmp, name);
    fs.writeFileSync(p, Buffer.concat(chunks));
    return p;
  }
  const G = (m: string, n: string) => Buffer.from(`c${m}\n${n}\n`, 'latin1');
  const str = (s: string) => Buffer.concat([Buffer.from([0x58, s.length, 0, 0, 0]), Buffer.from(s, 'latin1')]);

  test.each([
    ['torch.storage._load_from_bytes (unpickles bytes)', Buffer.concat([Buffer.from([0x80, 2]), G('torch.storage', '_load_from_bytes'), Buffer.from([0x43, 1, 0x2e, 0x85, 0x52, 0x2e])]), 'global "torch.storage._load_from_bytes"'],
    ['builtins.getattr', Buffer.concat([Buffer.from([0x80, 2]), G('builtins', 'getattr'), Buffer.from([0x2e])]), 'global "builtins.getattr"'],
    ['STACK_GLOBAL subprocess.Popen', Buffer.concat([Buffer.from([0x80, 4]), str('subprocess'), str('Popen'), Buffer.from([0x93, 0x2e])]), 'global "subprocess.Popen"'],
    ['INST', Buffer.concat([Buffer.from([0x28]), Buffer.from('ios\nsystem\n', 'latin1'), Buffer.from([0x2e])]), 'opcode INST'],
    ['REDUCE on a storage class', Buffer.concat([Buffer.from([0x80, 2]), G('torch', 'FloatStorage'), Buffer.from([0x29, 0x52, 0x2e])]), 'REDUCE expected an allowed callable'],
  ])('%s', async (label, pickle, msg) => {
    const p = await craft(`${label.replace(/\W+/g, '_')}.pth`, pickle);
    const e = await ioError(loadTorch(p));
    expect(e.message).toContain(msg);
    expect(e.message).toContain(p);
  });

  test('corrupt and foreign files are ERR_IO naming the file', async () => {
    const missing = path.join(tmp, 'missing.pth');
    expect((await ioError(loadTorch(missing))).message).toContain('no such file');
    const junk = path.join(tmp, 'junk.pth');
    fs.writeFileSync(junk, 'hello, not a checkpoint');
    expect((await ioError(loadTorch(junk))).message).toContain(junk);
    // A truncated zip: the end-of-central-directory record is gone.
    const trunc = path.join(tmp, 'trunc.pth');
    const b = fs.readFileSync(fx('bottleneck.pth'));
    fs.writeFileSync(trunc, b.subarray(0, b.length - 200));
    expect((await ioError(loadTorch(trunc))).message).toContain(trunc);
    // A truncated legacy file: storages cut short.
    const legacy = fs.readFileSync(fx('checkpoint_model_legacy.pth'));
    const lt = path.join(tmp, 'trunc_legacy.pth');
    fs.writeFileSync(lt, legacy.subarray(0, legacy.length - 100));
    expect((await ioError(loadTorch(lt))).message).toMatch(/truncated/);
    // A broadcast view claiming 10^10 elements of a one-element storage: refused, nothing allocated.
    expect((await ioError(loadTorch(fx('huge_broadcast.pth')))).message).toMatch(/tensor "huge" of at most .* elements/);
    // Only a single tensor, not a state dict.
    const st = await craft('tensor_only.pth', Buffer.from([0x80, 2, 0x4e, 0x2e]));
    expect((await ioError(loadTorch(st))).message).toContain('a state dict');
  });
});

describe('saveTorch and resnext convert', () => {
  const venvPython = path.join(__dirname, '..', '.cache', 'torch-venv', 'bin', 'python');
  const make = () => ({
    'conv.weight': rx.tensor([1.5, -2.25, 3, 4e-8, -0, 7], [1, 2, 3, 1]),
    'wide': rx.tensor([Math.PI, -1e300, 5e-324], [3], { dtype: 'float64' }),
    'half': rx.tensor([1, -2.5, 0.0078125, 96], [2, 2], { dtype: 'bfloat16' }),
    'bn.num_batches_tracked': rx.tensor([12345], [], { dtype: 'int32' }),
    'empty': rx.zeros([0, 4]),
  });

  test('saveTorch -> loadTorch keeps names, order, shapes, dtypes and values', async () => {
    const src = make();
    const file = path.join(tmp, 'round.pth');
    await saveTorch(file, src);
    const back = await loadTorch(file, { dtype: 'preserve' });
    try {
      expect(Object.keys(back)).toEqual(Object.keys(src));
      for (const [k, t] of Object.entries(src)) {
        expect([k, back[k].shape, back[k].dtype]).toEqual([k, t.shape, t.dtype]);
        const vals = (x: rx.Tensor) => rx.tidy(() => Array.from((x.dtype === 'bfloat16' ? rx.cast(x, 'float32') : x).dataSync()));
        expect([k, vals(back[k])]).toEqual([k, vals(t)]);
      }
      // Deterministic bytes: the same tensors give the same file.
      const again = path.join(tmp, 'round2.pth');
      await saveTorch(again, src);
      expect(fs.readFileSync(again).equals(fs.readFileSync(file))).toBe(true);
    } finally {
      dispose(src);
      dispose(back);
    }
  });

  test('the CLI converts .pth -> .safetensors -> .pth', async () => {
    const { main } = await import('../lib/cli/main');
    const st = path.join(tmp, 'block.safetensors');
    const pth = path.join(tmp, 'block.pth');
    const write = jest.spyOn(process.stdout, 'write').mockImplementation(() => true);
    try {
      expect(await main(['convert', fx('checkpoint_state_dict.pth'), st, '--json'])).toBe(0);
      expect(await main(['convert', st, pth])).toBe(0);
      const out = write.mock.calls.map((c) => String(c[0])).join('');
      expect(JSON.parse(out.split('\n')[0]).tensors).toBe(Object.keys(await loadSafetensors(st)).length);
    } finally {
      write.mockRestore();
    }
    const a = await loadTorch(fx('bottleneck.pth'));
    const b = await loadTorch(pth);
    try {
      expect(Object.keys(b).sort()).toEqual(Object.keys(a).sort());
      for (const k of Object.keys(a)) expect([k, Array.from(b[k].dataSync())]).toEqual([k, Array.from(a[k].dataSync())]);
    } finally {
      dispose(a);
      dispose(b);
    }
    await expect(main(['convert', st, path.join(tmp, 'x.onnx')])).rejects.toMatchObject({ code: 'ERR_ARG' });
  });

  // A check against PyTorch itself, where the development venv exists (scripts/fixtures/torch_checkpoints.py).
  (fs.existsSync(venvPython) ? test : test.skip)('torch.load (weights_only=True, and mmap=True) reads what saveTorch writes', async () => {
    const src = make();
    const file = path.join(tmp, 'for_torch.pth');
    const ref = path.join(tmp, 'for_torch.safetensors');
    await saveTorch(file, src);
    delete (src as Record<string, rx.Tensor>).half; // safetensors in torch compares bfloat16 fine, but keep the reference simple
    await saveSafetensors(ref, src);
    dispose(src);
    const script = `
import sys, torch, safetensors.torch
a = torch.load(sys.argv[1], weights_only=True)
m = torch.load(sys.argv[1], weights_only=True, mmap=True)
r = safetensors.torch.load_file(sys.argv[2])
assert list(a) == ['conv.weight', 'wide', 'half', 'bn.num_batches_tracked', 'empty'], list(a)
assert a['bn.num_batches_tracked'].dtype == torch.int64 and a['bn.num_batches_tracked'].item() == 12345
assert a['half'].dtype == torch.bfloat16 and a['half'].tolist() == [[1, -2.5], [0.0078125, 96]]
assert a['wide'].dtype == torch.float64 and torch.equal(a['wide'], r['wide'])
assert torch.equal(a['conv.weight'], r['conv.weight']) and a['empty'].shape == (0, 4)
for k in a: assert torch.equal(a[k], m[k]), k
print('ok')`;
    expect(execFileSync(venvPython, ['-c', script, file, ref], { encoding: 'utf8' }).trim()).toBe('ok');
  });
});

/**
 * Regressions from the security review (test/fuzz/torch-fuzz.js finds these classes): each file
 * must give ERR_IO naming the file, quickly, without allocating what it claims.
 */
describe('hostile files: ERR_IO, no hang, no huge allocation', () => {
  type Rec = { name: string; data: Buffer; deflate?: boolean; size?: number; csize?: number };
  const fz = require('./fuzz/torch-fuzz.js') as {
    writeZip(records: Rec[], opts?: { zip64?: { recordOffset?: number; cdOffset?: number; eocdFF?: boolean } }): Buffer;
    zipTorch(pickle: Buffer, data?: Record<string, Buffer>): Buffer;
    legacyTorch(obj: Buffer, storages?: [string, number, number][]): Buffer;
    stateDict(pairs: [string, Buffer][], proto?: number): Buffer;
    rebuild(pid: Buffer, offset: number, size: number[], stride: number[]): Buffer;
    pid(type: string, key: string, numel: number, view?: Buffer): Buffer;
    P: { str(s: string): Buffer; int(n: number): Buffer; global(m: string, n: string): Buffer; mark: Buffer; tuple: Buffer };
  };
  let n = 0;
  const file = (bytes: Buffer) => {
    const p = path.join(tmp, `hostile-${n++}.pth`);
    fs.writeFileSync(p, bytes);
    return p;
  };
  const pk = (...parts: (number[] | Buffer | string)[]) =>
    Buffer.concat(parts.map((x) => (typeof x === 'string' ? Buffer.from(x, 'latin1') : Buffer.from(x))));
  const load = async (bytes: Buffer) => {
    const p = file(bytes);
    const t0 = Date.now();
    const e = await ioError(loadTorch(p));
    expect(e.message).toContain(p);
    expect(Date.now() - t0).toBeLessThan(3000);
    return e.message;
  };
  const zipPickle = (pickle: Buffer) => load(fz.zipTorch(pickle));
  const tensor = (size: number[], stride: number[], key = '0', numel = 16, offset = 0) => fz.rebuild(fz.pid('FloatStorage', key, numel), offset, size, stride);

  test('BINSTRING with a negative length (moved the reader backwards: an endless loop)', async () => {
    expect(await zipPickle(pk([0x80, 2, 0x4e, 0x30, 0x54, 0xfa, 0xff, 0xff, 0xff]))).toContain('negative length');
    expect(await load(fz.legacyTorch(pk([0x80, 2, 0x4e, 0x30, 0x54, 0xfa, 0xff, 0xff, 0xff, 0x2e])))).toContain('negative length');
  });

  test('a megabyte LONG4, and 100k-digit protocol-0 ints (were quadratic)', async () => {
    const long4 = Buffer.alloc(5);
    long4[0] = 0x8b;
    long4.writeInt32LE(1 << 20, 1);
    expect(await zipPickle(pk([0x80, 2], long4, Buffer.alloc(1 << 20, 0x7f), [0x2e]))).toMatch(/integer of 1048576 bytes/);
    expect(await zipPickle(pk('L', '9'.repeat(100_000), '\n.'))).toMatch(/100000 digits/);
    expect(await zipPickle(pk('I', '9'.repeat(100_000), '\n.'))).toMatch(/100000 digits/);
  });

  test('globals named __proto__ / constructor are reported as written (not resolved through Object.prototype)', async () => {
    expect(await zipPickle(pk([0x80, 2], 'c__proto__\nsystem\n.'))).toContain('global "__proto__.system"');
    expect(await zipPickle(pk([0x80, 2], 'cconstructor\nconstructor\n.'))).toContain('global "constructor.constructor"');
    expect(await zipPickle(pk([0x80, 2], 'c__builtin__\neval\n.'))).toContain('global "builtins.eval" (written as "__builtin__.eval")');
  });

  test('names from the file cannot put control characters or megabytes into the message', async () => {
    const m = await zipPickle(pk([0x80, 4], fz.P.str('os\x1b[2J\n'), fz.P.str(`system${'x'.repeat(100_000)}`), [0x93, 0x2e]));
    expect(m).toContain('global "os\\u001b[2J\\u000a.system');
    expect([...m].some((c) => c.charCodeAt(0) < 0x20)).toBe(false);
    expect(m.length).toBeLessThan(1000);
  });

  test('zip records claiming sizes the file cannot hold are refused before allocating', async () => {
    const pickle = fz.stateDict([['w', tensor([4], [1])]]);
    const base = (over: Partial<Rec>) =>
      fz.writeZip([{ name: 'archive/data.pkl', data: pickle }, { name: 'archive/byteorder', data: Buffer.from('little') }, { name: 'archive/data/0', data: Buffer.alloc(64), ...over }]);
    expect(await load(base({ size: 0xfffffff0, csize: 0xfffffff0 }))).toMatch(/within the file/);
    // Deflated: 4 GB claimed from a few bytes is beyond deflate's 1032:1.
    expect(await load(base({ deflate: true, size: 0xfffffff0 }))).toMatch(/zip bomb/);
    const bomb = fz.writeZip([{ name: 'archive/data.pkl', data: pickle, deflate: true, size: 0xfffffff0 }]);
    expect(await load(bomb)).toMatch(/zip bomb|at most/);
    const bo = fz.writeZip([{ name: 'archive/data.pkl', data: pickle }, { name: 'archive/byteorder', data: Buffer.alloc(1 << 20), deflate: true }]);
    expect(await load(bo)).toMatch(/record "archive\/byteorder" of at most 16 bytes/);
  });

  test('a zip64 locator pointing beyond 2^53 (crashed the process inside yauzl) is ERR_IO', async () => {
    const pickle = fz.stateDict([['w', tensor([4], [1])]]);
    const recs = [{ name: 'a/data.pkl', data: pickle }, { name: 'a/data/0', data: Buffer.alloc(64) }];
    expect(await load(fz.writeZip(recs, { zip64: { recordOffset: 2 ** 56, eocdFF: true } }))).toMatch(/outside the file/);
    expect(await load(fz.writeZip(recs, { zip64: { cdOffset: 2 ** 60, eocdFF: true } }))).toContain('a readable zip archive');
  });

  test('deflated records (not what torch writes) still load; duplicate names and two data.pkl are refused', async () => {
    const pickle = fz.stateDict([['w', tensor([4], [1])]]);
    const data = Buffer.from(new Float32Array([1, 2, 3, 4, 5, 6, 7, 8]).buffer);
    const ok = file(fz.writeZip([{ name: 'a/data.pkl', data: pickle, deflate: true }, { name: 'a/data/0', data, deflate: true }]));
    const d = await loadTorch(ok);
    expect(Array.from(d.w.dataSync())).toEqual([1, 2, 3, 4]);
    dispose(d);
    const dup = fz.writeZip([{ name: 'a/data.pkl', data: pickle }, { name: 'a/data/0', data }, { name: 'a/data/0', data: Buffer.alloc(32) }]);
    expect(await load(dup)).toContain('two records named "a/data/0"');
    const two = fz.writeZip([{ name: 'a/data.pkl', data: pickle }, { name: 'b/data.pkl', data: pickle }, { name: 'a/data/0', data }]);
    expect(await load(two)).toContain('one data.pkl');
  });

  (fs.existsSync('/proc/self/fd') ? test : test.skip)('a zip refused while listing its records leaves no file descriptor open', async () => {
    const pickle = fz.stateDict([['w', tensor([4], [1])]]);
    const dup = file(fz.writeZip([{ name: 'a/data.pkl', data: pickle }, { name: 'a/data.pkl', data: pickle }]));
    const fds = () => fs.readdirSync('/proc/self/fd').length;
    const before = fds();
    for (let i = 0; i < 20; i++) await ioError(loadTorch(dup));
    expect(fds()).toBeLessThanOrEqual(before + 2);
  });

  test('broadcast views: each may exceed its storage a little, all together not (a tiny file claiming gigabytes)', async () => {
    // 2^26 elements each is within the per-tensor allowance; 20 of them (5 GB as float32) are not.
    const pairs: [string, Buffer][] = Array.from({ length: 20 }, (_, i) => [`t${i}`, tensor([1 << 26], [0], '0', 1)]);
    expect(await zipPickle(fz.stateDict(pairs))).toMatch(/tensors of at most \d+ elements in all/);
    // Offsets and strides reaching past the storage, and sizes whose product overflows.
    expect(await zipPickle(fz.stateDict([['w', tensor([4], [1], '0', 16, 13)]]))).toMatch(/within its storage of 16 elements/);
    expect(await zipPickle(fz.stateDict([['w', tensor([2, 2], [2 ** 40, 1])]]))).toMatch(/within its storage/);
    expect(await zipPickle(fz.stateDict([['w', tensor([2 ** 40, 2 ** 40, 2 ** 40], [0, 0, 0])]]))).toMatch(/of at most/);
    expect(await zipPickle(fz.stateDict([['w', tensor(new Array(65).fill(1), new Array(65).fill(1))]]))).toMatch(/at most 64 dimensions/);
  });

  test('legacy storage views (view_metadata) must lie within their root storage', async () => {
    const view = (off: number, size: number) => Buffer.concat([fz.P.mark, fz.P.str('v'), fz.P.int(off), fz.P.int(size), fz.P.tuple]);
    const obj = (v: Buffer) => fz.stateDict([['w', fz.rebuild(fz.pid('FloatStorage', '0', 16, v), 0, [4], [1])]]);
    expect(await load(fz.legacyTorch(obj(view(-4, 4)), [['0', 16, 4]]))).toContain('view_metadata');
    expect(await load(fz.legacyTorch(obj(view(14, 4)), [['0', 16, 4]]))).toContain('a storage view within its storage');
    expect(await load(fz.legacyTorch(obj(view(0, 2)), [['0', 16, 4]]))).toMatch(/within its storage of 2 elements/);
    const ok = file(fz.legacyTorch(obj(view(12, 4)), [['0', 16, 4]]));
    const d = await loadTorch(ok);
    expect(d.w.shape).toEqual([4]);
    dispose(d);
  });

  test('persistent ids of the wrong shape, and odd keys, are described without recursing or serialising', async () => {
    const nested = Buffer.concat([Buffer.alloc(100_000, 0x5d), Buffer.alloc(99_999, 0x61)]);
    const badLoc = Buffer.concat([fz.P.mark, fz.P.str('storage'), fz.P.global('torch', 'FloatStorage'), fz.P.str('0'), nested, fz.P.int(16), fz.P.tuple, Buffer.from([0x51])]);
    expect(await zipPickle(fz.stateDict([['w', fz.rebuild(badLoc, 0, [4], [1])]]))).toContain('a string storage location');
    // A dict whose keys are a bigint and a self-containing list: "a dict with keys ...".
    const keys = pk([0x80, 2, 0x7d, 0x28, 0x8a, 9, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0x4e, 0x5d, 0x94, 0x68, 0, 0x61, 0x4e, 0x75, 0x2e]);
    expect(await zipPickle(keys)).toContain('a dict with keys');
    expect(await zipPickle(pk([0x80, 2, 0x4e], 'pabc\n.'))).toContain('memo index');
  });

  test('the VM bounds objects, stack, memo and MARKs', async () => {
    const { unpickle, BufferSource, MAX_OBJECTS, MAX_ITEMS } = await import('../lib/io/torch/pickle');
    expect(MAX_OBJECTS).toBeLessThanOrEqual(1 << 22);
    expect(MAX_ITEMS).toBeLessThan(1 << 24); // a JS Map holds at most 2^24 entries
    const run = (b: Buffer, o = {}) => () => unpickle(new BufferSource(b), { persistentLoad: () => null, ...o });
    expect(run(Buffer.concat([Buffer.alloc(2000, 0x7d), Buffer.from([0x2e])]), { maxObjects: 1000 })).toThrow(/more than 1000 objects/);
    expect(run(Buffer.concat([Buffer.alloc(2000, 0x28), Buffer.from([0x2e])]), { maxItems: 1000 })).toThrow(/MARKs/);
    expect(run(Buffer.concat([Buffer.from([0x4e]), Buffer.alloc(2000, 0x94)]), { maxItems: 1000 })).toThrow(/memo/);
    expect(run(Buffer.concat([Buffer.from([0x4e]), Buffer.alloc(2000, 0x32)]), { maxItems: 1000 })).toThrow(/stack/);
  });
});
