/**
 * Process-wide counts of graph runs, for a job's cost report: forward runs (capture, generation prefill and
 * each decode step, scoring) and forward+backward runs (attribution), with the token positions each ran over
 * (batch x length, padding included: that is what the run computes). Plain counters: the pipeline reads
 * them before and after a stage; they are never reset.
 */
export interface PassCounts {
  forwardPasses: number;
  forwardTokens: number;
  backwardPasses: number;
  backwardTokens: number;
}

const counts: PassCounts = { forwardPasses: 0, forwardTokens: 0, backwardPasses: 0, backwardTokens: 0 };

export function countForward(tokens: number): void {
  counts.forwardPasses++;
  counts.forwardTokens += tokens;
}

export function countBackward(tokens: number): void {
  counts.backwardPasses++;
  counts.backwardTokens += tokens;
}

/** A copy of the counts so far. */
export function passCounts(): PassCounts {
  return { ...counts };
}

/** b - a, field by field. */
export function passDelta(a: PassCounts, b: PassCounts): PassCounts {
  return {
    forwardPasses: b.forwardPasses - a.forwardPasses,
    forwardTokens: b.forwardTokens - a.forwardTokens,
    backwardPasses: b.backwardPasses - a.backwardPasses,
    backwardTokens: b.backwardTokens - a.backwardTokens,
  };
}

/** a + b, field by field. */
export function addPasses(a: PassCounts, b: PassCounts): PassCounts {
  return {
    forwardPasses: a.forwardPasses + b.forwardPasses,
    forwardTokens: a.forwardTokens + b.forwardTokens,
    backwardPasses: a.backwardPasses + b.backwardPasses,
    backwardTokens: a.backwardTokens + b.backwardTokens,
  };
}
