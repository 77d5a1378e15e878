/**
 * Loads the native addon (prebuilt or built from source, found by node-gyp-build). Its typed
 * interface is generated from the addon's bind list (addon.generated.ts). Only lib/ops and
 * lib/tensor (and the loader's diagnostics in lib/native) use `native`; it is not public API.
 */
import * as path from 'node:path';
import { addonKind, explainAddonLoadError, explainMissingAddon } from './diagnose';
import type { NativeAddon } from './addon.generated';
import { ResnextError } from './errors';

export type { DTypeName, DeviceName, TensorHandle } from './handle';
export type * from './addon.generated';

/** Package root: dist/native/addon.js -> ../.. ; lib/native/addon.ts (ts-jest) -> ../.. */
export const packageRoot = path.resolve(__dirname, '..', '..');

function load(): { addon: NativeAddon; file: string } {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const gypBuild = require('node-gyp-build') as { (dir: string): unknown; resolve(dir: string): string };
  const where = `${process.platform}-${process.arch} (node ${process.version}, N-API ${process.versions.napi})`;
  let file: string;
  try {
    // RESNEXT_ADDON names a binary to load instead (a sanitizer or debug build:
    // scripts/asan.sh). Otherwise build/Release (a source build) first, then
    // prebuilds/<platform>-<arch>/*.node matching this runtime, N-API and libc. No install
    // script needs to have run.
    file = process.env.RESNEXT_ADDON ? path.resolve(process.env.RESNEXT_ADDON) : gypBuild.resolve(packageRoot);
  } catch (e) {
    throw new ResnextError(
      `resnext: no native addon found for ${where}: ${explainMissingAddon(packageRoot)}. ` + `Cause: ${(e as Error).message}`,
      'ERR_LOAD',
    );
  }
  let addon: NativeAddon;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    addon = require(file) as NativeAddon;
  } catch (e) {
    const msg = (e as Error).message;
    throw new ResnextError(
      `resnext: the native addon ${file} (${addonKind(file, packageRoot)}) could not be loaded on ${where}: ${msg}. ` +
        explainAddonLoadError(file, packageRoot, msg),
      'ERR_LOAD',
    );
  }
  addon.setErrorClass(ResnextError);
  return { addon, file };
}

const loaded = load();
export const native: NativeAddon = loaded.addon;
/** The path of the loaded addon binary (for diagnostics). */
export const addonPath: string = loaded.file;
/** Whether that binary is one of the package's prebuilds or a source build (build/Release). */
export const addonSource = addonKind(loaded.file, packageRoot);
