/** Small statistics for the benchmark: medians with spread, mean and std, Welch's t-test. */

export interface Spread {
  median: number;
  min: number;
  max: number;
  n: number;
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

export function spread(xs: number[]): Spread {
  return { median: median(xs), min: Math.min(...xs), max: Math.max(...xs), n: xs.length };
}

export function mean(xs: number[]): number {
  return xs.reduce((a, b) => a + b, 0) / xs.length;
}

/** Sample standard deviation (n - 1); 0 for a single value. */
export function std(xs: number[]): number {
  if (xs.length < 2) return 0;
  const m = mean(xs);
  return Math.sqrt(xs.reduce((a, b) => a + (b - m) ** 2, 0) / (xs.length - 1));
}

// Two-sided 95% critical values of Student's t for df = 1..30 (then 1.96 as df grows).
const T95 = [
  12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.16, 2.145, 2.131, 2.12, 2.11, 2.101, 2.093, 2.086,
  2.08, 2.074, 2.069, 2.064, 2.06, 2.056, 2.052, 2.048, 2.045, 2.042,
];

export function tCritical95(df: number): number {
  if (!(df >= 1)) return Number.POSITIVE_INFINITY;
  if (df > 30) return df > 120 ? 1.96 : 2.0;
  // Interpolate between integer degrees of freedom (Welch's df is fractional).
  const lo = Math.floor(df), hi = Math.ceil(df);
  const a = T95[lo - 1], b = T95[Math.min(hi, 30) - 1];
  return a + (b - a) * (df - lo);
}

export interface Welch {
  /** mean(b) - mean(a) */
  diff: number;
  /** Standard error of the difference. */
  se: number;
  t: number;
  df: number;
  tCrit: number;
  significant: boolean;
}

/** Welch's two-sample t-test of mean(b) - mean(a) at the 95% level (two-sided). */
export function welch(a: number[], b: number[]): Welch {
  const va = std(a) ** 2 / a.length, vb = std(b) ** 2 / b.length;
  const diff = mean(b) - mean(a);
  const se = Math.sqrt(va + vb);
  const df = se > 0 ? (va + vb) ** 2 / ((a.length > 1 ? va ** 2 / (a.length - 1) : 0) + (b.length > 1 ? vb ** 2 / (b.length - 1) : 0)) : Number.NaN;
  const t = se > 0 ? diff / se : diff === 0 ? 0 : Number.POSITIVE_INFINITY * Math.sign(diff);
  const tCrit = tCritical95(df);
  return { diff, se, t, df, tCrit, significant: Number.isFinite(tCrit) && Math.abs(t) > tCrit };
}
