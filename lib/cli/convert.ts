/**
 * `resnext convert IN OUT`: PyTorch checkpoints to safetensors and back, chosen by extension.
 * IN.pth/.pt/.bin/.ckpt -> OUT.safetensors reads with io.loadTorch (zip or legacy format; a
 * training checkpoint's state dict is unwrapped and DDP's 'module.' stripped) and keeps dtypes
 * (float16 becomes float32, integers int32). IN.safetensors -> OUT.pth writes torch.save's zip
 * format (io.saveTorch). Both write atomically.
 */
import * as fs from 'node:fs';
import { parseArgs } from 'node:util';
import { loadSafetensors, loadTorch, saveSafetensors, saveTorch } from '../io';
import type { Tensor } from '../tensor/tensor';
import { UsageError } from './args';

export const CONVERT_HELP = `Usage: resnext convert IN OUT [options]

Converts between PyTorch checkpoints (torch.save: .pth, .pt, .bin, .ckpt) and safetensors.
  resnext convert resnext50_32x4d-1a0047aa.pth resnext50_32x4d.safetensors
  resnext convert model.safetensors model.pth        (readable by torch.load)

  --key PATH       where the state dict is in a checkpoint (default: the top level, else its
                   'state_dict' or 'model' entry); '/' separates levels, e.g. ema/state_dict
  --keep-prefix    keep DDP's 'module.' prefix (stripped by default)
  --dtype NAME     float32 | preserve (default preserve: float64 and bfloat16 stay)
  --json           print the summary as JSON`;

const TORCH_EXT = /\.(pth|pt|bin|ckpt|tar)$/i;
const ST_EXT = /\.safetensors$/i;

export async function convertCommand(argv: string[]): Promise<number> {
  let f: Record<string, string | boolean | undefined> = {};
  let positionals: string[] = [];
  try {
    const r = parseArgs({
      args: argv, allowPositionals: true, strict: true,
      options: { help: { type: 'boolean', short: 'h' }, key: { type: 'string' }, 'keep-prefix': { type: 'boolean' }, dtype: { type: 'string' }, json: { type: 'boolean' } },
    });
    f = r.values;
    positionals = r.positionals;
  } catch (e) {
    throw new UsageError(`${(e as Error).message.replace(/^Unknown option/, 'unknown option')}. Run 'resnext convert --help' for the options.`);
  }
  if (f.help) {
    process.stdout.write(`${CONVERT_HELP}\n`);
    return 0;
  }
  if (positionals.length !== 2) throw new UsageError(`convert expected IN and OUT file paths, received ${positionals.length} arguments`);
  const [input, output] = positionals;
  const dtype = (f.dtype as string | undefined) ?? 'preserve';
  if (dtype !== 'float32' && dtype !== 'preserve') throw new UsageError(`--dtype expected float32 or preserve, received "${dtype}"`);
  const toSafetensors = TORCH_EXT.test(input) && ST_EXT.test(output);
  const toTorch = ST_EXT.test(input) && TORCH_EXT.test(output);
  if (!toSafetensors && !toTorch)
    throw new UsageError(`convert expected IN.pth -> OUT.safetensors or IN.safetensors -> OUT.pth, received "${input}" -> "${output}"`);
  const t0 = Date.now();
  let tensors: Record<string, Tensor>;
  if (toSafetensors) {
    tensors = await loadTorch(input, { key: f.key as string | undefined, stripPrefix: f['keep-prefix'] ? false : 'module.', dtype });
  } else {
    if (f.key !== undefined || f['keep-prefix']) throw new UsageError('--key and --keep-prefix apply to a PyTorch input only');
    tensors = await loadSafetensors(input);
  }
  try {
    if (toSafetensors) await saveSafetensors(output, tensors);
    else await saveTorch(output, tensors);
  } finally {
    for (const t of Object.values(tensors)) t.dispose();
  }
  const summary = {
    input, output, tensors: Object.keys(tensors).length, bytes: fs.statSync(output).size, seconds: (Date.now() - t0) / 1000,
  };
  if (f.json) process.stdout.write(`${JSON.stringify(summary)}\n`);
  else process.stdout.write(`${input} -> ${output}: ${summary.tensors} tensors, ${(summary.bytes / 1e6).toFixed(1)} MB in ${summary.seconds.toFixed(2)} s\n`);
  return 0;
}
