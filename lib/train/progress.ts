/**
 * Progress output for training: a single redrawn status line on a TTY (epoch, step, loss,
 * accuracy, img/s, ETA), plain lines at intervals when output is a file or pipe.
 */
export interface ProgressInfo {
  epoch: number;
  epochs: number;
  step: number;
  steps: number;
  loss: number;
  acc: number;
  imgPerSec: number;
  etaSec: number;
  lr: number;
}

function fmtTime(s: number): string {
  if (!Number.isFinite(s)) return '--:--';
  s = Math.max(0, Math.round(s));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  return h ? `${h}:${String(m).padStart(2, '0')}:${String(sec).padStart(2, '0')}` : `${m}:${String(sec).padStart(2, '0')}`;
}

export class Progress {
  private lastPlain = 0;
  private drawn = false;
  constructor(
    private readonly out: NodeJS.WritableStream & { isTTY?: boolean; columns?: number },
    private readonly mode: 'tty' | 'plain' | 'off',
    private readonly plainEverySec = 10,
  ) {}

  static auto(out: NodeJS.WritableStream & { isTTY?: boolean }, enabled: boolean | 'auto' = 'auto'): Progress {
    if (enabled === false) return new Progress(out, 'off');
    return new Progress(out, out.isTTY ? 'tty' : 'plain');
  }

  update(p: ProgressInfo): void {
    if (this.mode === 'off') return;
    const line =
      `epoch ${p.epoch + 1}/${p.epochs} step ${p.step}/${p.steps} loss ${p.loss.toFixed(4)} acc ${(100 * p.acc).toFixed(1)}% ` +
      `lr ${p.lr.toPrecision(3)} ${p.imgPerSec.toFixed(1)} img/s ETA ${fmtTime(p.etaSec)}`;
    if (this.mode === 'tty') {
      const width = Math.max(20, (this.out.columns ?? 100) - 1);
      const barW = Math.max(10, Math.min(30, width - line.length - 3));
      const filled = Math.round((barW * p.step) / Math.max(1, p.steps));
      const bar = `[${'#'.repeat(filled)}${'.'.repeat(barW - filled)}] `;
      this.out.write(`\r\x1b[2K${(bar + line).slice(0, width)}`);
      this.drawn = true;
    } else {
      const now = Date.now();
      if (now - this.lastPlain >= this.plainEverySec * 1000 || p.step === p.steps) {
        this.lastPlain = now;
        this.out.write(`${line}\n`);
      }
    }
  }

  /** A permanent line (epoch summaries, messages). */
  log(line: string): void {
    if (this.mode === 'off') return;
    if (this.mode === 'tty' && this.drawn) this.out.write('\r\x1b[2K');
    this.drawn = false;
    this.out.write(`${line}\n`);
  }
}
