/** File formats and durable writes: safetensors, PyTorch's torch.save files (loadTorch / saveTorch), ONNX export, the atomic writer. */
export { writeFileAtomic, writeFileAtomicSync, type AtomicData, type AtomicWriteOptions } from './atomic';
export {
  loadSafetensors, loadSafetensorsSync, saveSafetensors, saveSafetensorsSync, encodeSafetensors, readSafetensorsHeader,
  type TensorDict, type SafetensorsHeader, type SafetensorsHeaderEntry,
} from './safetensors';
export { exportOnnx, encodeOnnx, ONNX_OPSET, ONNX_IR_VERSION, type OnnxExportOptions, type OnnxExportInfo } from './onnx';
export { encodeNpy, saveNpy } from './npy';
export { loadTorch, openTorch, saveTorch, type LoadTorchOptions, type SaveTorchOptions, type TorchReader, type TorchIndexEntry } from './torch';
