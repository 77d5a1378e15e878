/**
 * Against files written by PyTorch/torchvision (test/fixtures/torchvision, made by
 * scripts/fixtures/torchvision_fixtures.py): the four named builders have torchvision's exact
 * state-dict entries (names, order, shapes) and sizes; a torchvision Bottleneck's weights load
 * with strict: true into ours and give the same outputs, running statistics and gradients.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as rx from '../lib';
import { loadSafetensors } from '../lib/io';

const dir = path.join(__dirname, 'fixtures', 'torchvision');
const shapes = JSON.parse(fs.readFileSync(path.join(dir, 'state_dict_shapes.json'), 'utf8')) as Record<
  string,
  { params: number; macs: number; entries: [string, number[], string][] }
>;

test.each(['resnet50', 'resnext50_32x4d', 'resnext101_32x8d', 'resnext101_64x4d'] as const)(
  '%s: the same state-dict entries as torchvision, in the same order, with the same shapes',
  (name) => {
    const m = rx.models[name]({ init: 'none' });
    try {
      const ours = Object.entries(m.stateDict()).map(([k, t]) => [k, [...t.shape], t.dtype === 'int32' ? 'int64' : t.dtype]);
      expect(ours).toEqual(shapes[name].entries);
      expect(rx.models.countParams(m).total).toBe(shapes[name].params);
    } finally {
      m.dispose();
    }
  },
);

describe('a torchvision Bottleneck (stride 2, downsample, 4 groups) loaded into ours', () => {
  let fx: Record<string, rx.Tensor>;
  beforeAll(async () => {
    fx = await loadSafetensors(path.join(dir, 'bottleneck.safetensors'));
  });
  afterAll(() => {
    for (const t of Object.values(fx)) t.dispose();
  });

  const build = () => {
    const down = new rx.nn.Sequential(rx.models.conv1x1(32, 64, 2), new rx.nn.BatchNorm2d(64));
    const block = new rx.models.Bottleneck(32, 16, 2, down, 4, 16);
    const sd: Record<string, rx.Tensor> = {};
    for (const [k, t] of Object.entries(fx)) if (k.startsWith('block.')) sd[k.slice(6)] = t;
    block.loadStateDict(sd, { strict: true });
    return block;
  };
  const maxDiff = (a: rx.Tensor, b: rx.Tensor) => {
    const x = a.dataSync(), y = b.dataSync();
    expect(x.length).toBe(y.length);
    let m = 0;
    for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i] - y[i]));
    return m;
  };

  test('eval mode output', () => {
    const block = build().eval();
    rx.tidy(() => expect(maxDiff(block.forward(fx.input), fx.output_eval)).toBeLessThan(1e-4));
    block.dispose();
  });

  test('train mode output, running statistics and gradients', () => {
    const block = build().train();
    rx.tidy(() => {
      const x = rx.clone(fx.input);
      x.requiresGrad = true;
      const y = block.forward(x);
      expect(maxDiff(y, fx.output_train)).toBeLessThan(1e-4);
      expect(maxDiff(block.bn1.runningMean, fx.train_running_mean_bn1)).toBeLessThan(1e-5);
      expect(maxDiff(block.bn1.runningVar, fx.train_running_var_bn1)).toBeLessThan(1e-5);
      y.backward(fx.grad_output);
      expect(maxDiff(x.grad!, fx.grad_input_train)).toBeLessThan(1e-4);
      expect(maxDiff(block.conv2.weight.grad!, fx.grad_conv2_weight_train)).toBeLessThan(1e-3);
    });
    block.dispose();
  });
});
