/** File formats and durable writes: safetensors (load/save any tensors) and the atomic writer. */
export { writeFileAtomic, writeFileAtomicSync, type AtomicData, type AtomicWriteOptions } from './atomic';
export {
  loadSafetensors, loadSafetensorsSync, saveSafetensors, saveSafetensorsSync, encodeSafetensors, readSafetensorsHeader,
  type TensorDict, type SafetensorsHeader, type SafetensorsHeaderEntry,
} from './safetensors';
