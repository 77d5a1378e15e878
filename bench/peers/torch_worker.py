"""PyTorch side of `npm run bench:peers` (a long-lived worker; see run.js).

Protocol: one JSON object per line on stdin, one JSON reply per line on stdout.
  {"cmd": "setup", "workload": {...}}  builds the model, optimizer and a fixed random batch
  {"cmd": "step"}                      one training step or one inference forward; replies {"ms": ...}
  {"cmd": "export", "model": ..., "batch": B, "size": S, "path": P}   ONNX export (opset 18, static shapes)
  {"cmd": "quit"}
Models: torchvision's resnext50_32x4d and the ResNeXt-29 of lib/models/cifar.ts (same layer
structure: 1x1 -> BN+ReLU -> grouped 3x3 -> BN+ReLU -> 1x1 -> BN, + shortcut, ReLU).
"""
import json
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class CifarBlock(nn.Module):
    def __init__(self, in_ch, out_ch, width, card, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, groups=card, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.shortcut = None
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x):
        a = F.relu(self.bn1(self.conv1(x)))
        b = F.relu(self.bn2(self.conv2(a)))
        s = self.shortcut(x) if self.shortcut is not None else x
        return F.relu(self.bn3(self.conv3(b)) + s)


class ResNeXt29(nn.Module):
    def __init__(self, cardinality, width, num_classes, in_ch, stem, stages, blocks, stem_stride):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, stem, 3, stride=stem_stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        layers = []
        c = stem
        for s, out_ch in enumerate(stages):
            w = cardinality * width * 2 ** s
            for b in range(blocks):
                layers.append(CifarBlock(c, out_ch, w, cardinality, 2 if (b == 0 and s > 0) else 1))
                c = out_ch
        self.stages = nn.Sequential(*layers)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.stages(y)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1))


def build(w):
    if w["model"] == "resnext29":
        m = w["cfg"]
        return ResNeXt29(m["cardinality"], m["width"], w["classes"], w["inChannels"], m["stemChannels"],
                         m["stageChannels"], m.get("blocksPerStage", 3), m["stemStride"])
    import torchvision
    return getattr(torchvision.models, w["model"])(num_classes=w["classes"])


def main():
    torch.manual_seed(0)
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    out = sys.stdout
    state = {}
    for line in sys.stdin:
        msg = json.loads(line)
        cmd = msg["cmd"]
        try:
            if cmd == "quit":
                break
            if cmd == "hello":
                reply = {"torch": torch.__version__, "threads": torch.get_num_threads(),
                         "isa": torch.backends.cpu.get_cpu_capability()}
            elif cmd == "export":
                model = build(msg).eval()
                x = torch.randn(msg["batch"], msg["inChannels"], msg["size"], msg["size"])
                with torch.no_grad():
                    torch.onnx.export(model, (x,), msg["path"], opset_version=18, input_names=["input"],
                                      output_names=["logits"], dynamo=False)
                reply = {"ok": True}
            elif cmd == "setup":
                w = msg["workload"]
                model = build(w)
                x = torch.randn(w["batch"], w["inChannels"], w["size"], w["size"])
                y = torch.tensor([(i * 7) % w["classes"] for i in range(w["batch"])], dtype=torch.long)
                state = {"w": w, "model": model, "x": x, "y": y}
                if w["kind"] == "train":
                    model.train()
                    state["opt"] = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
                else:
                    model.eval()
                reply = {"ok": True}
            elif cmd == "step":
                model, x, y, w = state["model"], state["x"], state["y"], state["w"]
                c0 = time.process_time()
                t0 = time.perf_counter()
                if w["kind"] == "train":
                    opt = state["opt"]
                    loss = F.cross_entropy(model(x), y)
                    loss.backward()
                    opt.step()
                    opt.zero_grad(set_to_none=True)
                    v = loss.item()
                else:
                    with torch.inference_mode():
                        v = float(model(x)[0, 0])
                t1 = time.perf_counter()
                reply = {"ms": (t1 - t0) * 1000.0, "cpuMs": (time.process_time() - c0) * 1000.0, "value": v}
            else:
                reply = {"error": "unknown command " + cmd}
        except Exception as e:  # reported to the orchestrator, which stops the run
            reply = {"error": "%s: %s" % (type(e).__name__, e)}
        out.write(json.dumps(reply) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
