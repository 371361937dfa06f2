/**
 * One prompt line of a probe set, as every layer sees it once parsed at the edge (API upload, CLI file):
 * JSONL `{"prompt", "category"?, "response"?}`. `response` is the one name of the expected answer, the API's
 * public name; files whose key is `answer` are read into `response` by the parser. It lives here, below
 * defense and pipeline, so that defense never imports pipeline for it.
 */
export interface ProbeRecord {
  prompt: string;
  category?: string;
  /** The expected answer (task probes, benign look-alikes); absent on harmful probes. */
  response?: string;
}
