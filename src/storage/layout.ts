/**
 * Every path under FGSN_DATA_DIR, in one place. The API (uploads), the queue (scratch, engine cache) and
 * the fs artifact store all live under the same root; deciding their names here keeps one of them from
 * reading or sweeping another's folder and lets the path scrubber recognise an upload folder.
 *
 *   <data>/uploads/<checkpoint>/files/<name>   completed upload files (read-only once complete)
 *   <data>/uploads/<checkpoint>/partial/       bytes of a PUT still being received
 *   <data>/uploads/<checkpoint>/resumable/<name>  a file sent in Content-Range chunks, until its last byte
 *   <data>/work/<job>/attempt-.../             one attempt's private output folder
 *   <data>/cache/                              the pipeline's cache root (it keeps built ONNX sessions in
 *                                              cache/engine, which the queue bounds and evicts from)
 *   <data>/artifacts/                          the fs blob store (published artifacts, probe sets)
 */
import { join, relative, sep } from 'node:path';

export interface DataLayout {
  readonly root: string;
  /** Everything of one upload: removed whole when the checkpoint is deleted or abandoned. */
  upload(checkpointId: string): string;
  /** The upload's files: what a job reads as the checkpoint folder. */
  uploadFiles(checkpointId: string): string;
  /** Where PUT bodies are streamed before they are renamed into uploadFiles. */
  uploadPartial(checkpointId: string): string;
  /** Files sent in Content-Range chunks, one per (flat) name, until their last chunk moves them into uploadFiles. */
  uploadResumable(checkpointId: string): string;
  /** A job's scratch folder (all its attempts); removed when the job ends. */
  jobScratch(jobId: string): string;
  /** The pipeline's cache root (its `engine/` folder holds built sessions). */
  readonly cache: string;
  /** Built engine sessions, bounded by the cache lifecycle. */
  readonly engineCache: string;
  /** Root of the fs blob store. */
  readonly artifacts: string;
  /** The checkpoint id when `path` is (inside) an upload's files folder, with the rest of the path. */
  uploadOf(path: string): { checkpointId: string; rest: string[] } | undefined;
}

const UPLOADS = 'uploads';
const FILES = 'files';

export function dataLayout(root: string): DataLayout {
  const upload = (id: string): string => join(root, UPLOADS, id);
  return {
    root,
    upload,
    uploadFiles: (id) => join(upload(id), FILES),
    uploadPartial: (id) => join(upload(id), 'partial'),
    uploadResumable: (id) => join(upload(id), 'resumable'),
    jobScratch: (jobId) => join(root, 'work', jobId),
    cache: join(root, 'cache'),
    engineCache: join(root, 'cache', 'engine'),
    artifacts: join(root, 'artifacts'),
    uploadOf(path) {
      const rel = relative(root, path).split(sep);
      return rel[0] === UPLOADS && rel[2] === FILES && rel[1] !== undefined ? { checkpointId: rel[1], rest: rel.slice(3) } : undefined;
    },
  };
}
