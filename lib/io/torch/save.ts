/**
 * saveTorch: a state dict as a `torch.save` zip file that `torch.load` (weights_only=True too)
 * reads back: `<root>/data.pkl` (protocol 2: an OrderedDict of _rebuild_tensor_v2 calls, see
 * pickle.ts), `<root>/byteorder`, one uncompressed record `<root>/data/<i>` per tensor, and
 * `<root>/version`. The zip is written by yazl; each tensor's bytes are produced only when yazl
 * reaches its record, so at most one tensor's host copy exists at a time, and the file is
 * written atomically (atomic.ts). We omit `.format_version` / `.storage_alignment`: they tell
 * torch's reader it may compute storage offsets from 64-byte alignment, which yazl does not pad.
 */
import { Readable } from 'node:stream';
import { ZipFile } from 'yazl';
import { describe, fail } from '../../native/errors';
import { cast } from '../../ops/shape';
import { Tensor } from '../../tensor/tensor';
import { writeFileAtomic } from '../atomic';
import { float32ToBf16Bits } from '../safetensors';
import { type PickleTensor, type TorchDType, writeStateDictPickle } from './pickle';

export interface SaveTorchOptions {
  /**
   * The torch dtype of our int32 tensors: 'int64' (default; what torchvision's
   * `num_batches_tracked` buffers are, and what our int32 stands for) or 'int32'.
   */
  intDtype?: 'int64' | 'int32';
}

const OP = 'saveTorch';
// A fixed timestamp (the DOS epoch) makes the file a function of its contents only.
const MTIME = new Date(1980, 0, 1);

function hostBytes(t: Tensor, dtype: TorchDType): Uint8Array {
  if (t.dtype === 'bfloat16') {
    const f = cast(t, 'float32');
    try {
      const bits = float32ToBf16Bits(f.dataSync() as Float32Array);
      return new Uint8Array(bits.buffer, bits.byteOffset, bits.byteLength);
    } finally {
      f.dispose();
    }
  }
  const v = t.dataSync();
  if (dtype === 'int64') {
    const w = new BigInt64Array(v.length);
    for (let i = 0; i < v.length; i++) w[i] = BigInt(v[i]);
    return new Uint8Array(w.buffer);
  }
  return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
}

/**
 * Saves tensors (a state dict) as a torch.save zip file, in the order given, atomically. Our
 * float32 / float64 / bfloat16 tensors become torch float32 / float64 / bfloat16, int32 becomes
 * int64 (see SaveTorchOptions). Little-endian hosts only (as every platform Node ships for).
 */
export async function saveTorch(file: string, tensors: Record<string, Tensor> | Map<string, Tensor>, options: SaveTorchOptions = {}): Promise<void> {
  if (typeof file !== 'string' || file.length === 0) fail('ERR_ARG', OP, 'path', 'a non-empty file path', describe(file));
  const intDtype = options.intDtype ?? 'int64';
  if (intDtype !== 'int64' && intDtype !== 'int32') fail('ERR_ARG', OP, 'options.intDtype', '"int64" or "int32"', describe(intDtype));
  const pairs = tensors instanceof Map ? [...tensors] : tensors && typeof tensors === 'object' ? Object.entries(tensors) : null;
  if (!pairs) fail('ERR_ARG', OP, 'tensors', 'a Record<string, Tensor> or a Map<string, Tensor>', describe(tensors));
  const list: { name: string; t: Tensor; dtype: TorchDType }[] = [];
  for (const [name, t] of pairs) {
    if (typeof name !== 'string' || name.length === 0) fail('ERR_ARG', OP, 'tensors', 'non-empty string names', describe(name));
    if (!(t instanceof Tensor)) fail('ERR_ARG', OP, `tensors["${name}"]`, 'a Tensor', describe(t));
    if (t.isDisposed) fail('ERR_DISPOSED', OP, `tensors["${name}"]`, 'a live tensor', 'a disposed tensor');
    const dtype: TorchDType = t.dtype === 'int32' ? intDtype : t.dtype;
    list.push({ name, t, dtype });
  }
  const specs: PickleTensor[] = list.map((e, i) => ({ name: e.name, storageKey: String(i), dtype: e.dtype, shape: [...e.t.shape] }));
  // torch names the top folder after the file; 'archive' (its name for in-memory saves) keeps the bytes independent of the path.
  const root = 'archive';
  const zip = new ZipFile();
  const opts = { compress: false, mtime: MTIME, forceDosTimestamp: true };
  zip.addBuffer(writeStateDictPickle(specs), `${root}/data.pkl`, opts);
  zip.addBuffer(Buffer.from('little'), `${root}/byteorder`, opts);
  list.forEach((e, i) => {
    const bytes = e.t.shape.reduce((a, b) => a * b, 1) * (e.dtype === 'float64' || e.dtype === 'int64' ? 8 : e.dtype === 'bfloat16' ? 2 : 4);
    zip.addReadStreamLazy(`${root}/data/${i}`, { ...opts, size: bytes }, (cb) => {
      try {
        cb(null, Readable.from([Buffer.from(hostBytes(e.t, e.dtype))]));
      } catch (err) {
        cb(err, Readable.from([]));
      }
    });
  });
  zip.addBuffer(Buffer.from('3\n'), `${root}/version`, opts);
  zip.end();
  await writeFileAtomic(file, zip.outputStream as unknown as AsyncIterable<Uint8Array>);
}
