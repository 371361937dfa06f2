/**
 * Where checkpoint problems go. Opening for use wants the first problem thrown (STRICT); validating an
 * upload wants every problem at once, so a user fixes them in one round trip (ProblemCollector).
 *
 * A collector lists at most MAX_LISTED_PROBLEMS and only counts the rest: a hostile folder (a config that
 * claims 40,000 layers, a header with a million tensors) must not turn into a response of millions of
 * problems. The count of the rest is kept, by code, and shown as one last summary problem.
 */
import { FgsnError } from '../errors.js';

export interface ProblemSink {
  report(e: FgsnError): void;
}

export const STRICT: ProblemSink = {
  report(e) {
    throw e;
  },
};

/** Problems listed one by one; the rest are counted (issue 15: 100 + a count). */
export const MAX_LISTED_PROBLEMS = 100;

export class ProblemCollector implements ProblemSink {
  /** The first MAX_LISTED_PROBLEMS problems; `omitted` counts the others. */
  readonly problems: FgsnError[] = [];
  private readonly omittedByCode = new Map<string, number>();
  private omittedCount = 0;

  report(e: FgsnError): void {
    if (this.problems.length < MAX_LISTED_PROBLEMS) this.problems.push(e);
    else this.omit(e.code, 1);
  }

  get omitted(): number {
    return this.omittedCount;
  }

  /** Every problem seen, listed or not. */
  get total(): number {
    return this.problems.length + this.omittedCount;
  }

  /** Runs `fn`, recording a thrown FgsnError (a problem that stops this branch of checks, not the others). */
  async attempt<T>(fn: () => Promise<T>): Promise<T | null> {
    try {
      return await fn();
    } catch (e) {
      if (e instanceof FgsnError) {
        this.report(e);
        return null;
      }
      throw e;
    }
  }

  /** Hands every problem on to `sink`; another collector also receives the count of those not listed. */
  drainTo(sink: ProblemSink): void {
    for (const p of this.problems) sink.report(p);
    if (sink instanceof ProblemCollector) for (const [code, n] of this.omittedByCode) sink.omit(code, n);
    else if (this.omittedCount > 0) sink.report(this.summary() as FgsnError);
  }

  /** The listed problems plus, when some were only counted, one summary problem: at most MAX + 1 entries. */
  list(): FgsnError[] {
    const s = this.summary();
    return s === null ? [...this.problems] : [...this.problems, s];
  }

  private omit(code: string, n: number): void {
    this.omittedCount += n;
    this.omittedByCode.set(code, (this.omittedByCode.get(code) ?? 0) + n);
  }

  private summary(): FgsnError | null {
    if (this.omittedCount === 0) return null;
    const byCode = Object.fromEntries([...this.omittedByCode].sort(([a], [b]) => a.localeCompare(b)));
    return new FgsnError('CHECKPOINT_TOO_MANY_PROBLEMS', `${this.omittedCount} more problem(s) not listed (${Object.entries(byCode).map(([c, n]) => `${c}: ${n}`).join(', ')})`, {
      details: { omitted: this.omittedCount, byCode },
    });
  }
}
