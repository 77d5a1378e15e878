/**
 * Finding and loading the gloo collectives: resnext_gloo.node (native/gloo), a separate addon
 * linked against Debian's libgloo-dev, built with `npm run build:gloo`. The CPU addon never links
 * gloo, so a base install has no such dependency; a missing addon or libgloo.so gives ERR_DEVICE
 * saying what to install.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { packageRoot } from '../../native/addon';
import { ResnextError } from '../../native/errors';

export const GLOO_ADDON = 'resnext_gloo.node';

/** The native group: collectives run in submission order on the group's own thread. */
export interface GlooGroup {
  readonly rank: number;
  readonly size: number;
  allreduce(data: Float32Array, average: boolean): Promise<void>;
  allreduceSync(data: Float32Array, average: boolean): void;
  broadcast(data: Float32Array, root: number): Promise<void>;
  broadcastSync(data: Float32Array, root: number): void;
  barrier(): Promise<void>;
  barrierSync(): void;
  close(): void;
}

export interface GlooAddon {
  connect(o: { rank: number; size: number; storeHost: string; storePort: number; hostname: string; timeoutMs: number }): Promise<GlooGroup>;
  abi: number;
}

/** Where resnext_gloo.node may be, first match wins: RESNEXT_GLOO_ADDON (alone when set), else build-gloo/Release, build/Release, prebuilds. */
export function glooAddonCandidates(): string[] {
  // An explicit path is the only candidate.
  if (process.env.RESNEXT_GLOO_ADDON) return [path.resolve(process.env.RESNEXT_GLOO_ADDON)];
  const c: string[] = [];
  c.push(path.join(packageRoot, 'build-gloo', 'Release', GLOO_ADDON));
  c.push(path.join(packageRoot, 'build', 'Release', GLOO_ADDON));
  c.push(path.join(packageRoot, 'prebuilds', `${process.platform}-${process.arch}`, GLOO_ADDON));
  return [...new Set(c)];
}

let loaded: GlooAddon | null = null;

export function loadGloo(): GlooAddon {
  if (loaded) return loaded;
  const searched = glooAddonCandidates();
  const found = searched.find((p) => fs.existsSync(p));
  const install = 'install gloo (Debian/Ubuntu: `apt-get install libgloo-dev`) and build the addon with `npm run build:gloo`';
  if (!found)
    throw new ResnextError(`distributed: backend 'gloo' expected the collective library ${GLOO_ADDON}, received none (searched: ${searched.join(', ')}); ${install}, or set RESNEXT_GLOO_ADDON to its path`, 'ERR_DEVICE');
  try {
    loaded = require(found) as GlooAddon;
  } catch (e) {
    const msg = (e as Error).message;
    const lib = /(lib[\w.+-]+\.so[\w.]*)/.exec(msg)?.[1];
    throw new ResnextError(
      `distributed: backend 'gloo' could not load ${found}: ${msg}` + (lib ? `; the dynamic loader cannot find ${lib}: ${install}` : `; ${install}`),
      'ERR_DEVICE',
    );
  }
  return loaded;
}
