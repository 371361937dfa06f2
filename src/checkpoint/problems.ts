/**
 * Where checkpoint problems go. Opening for use wants the first problem thrown (STRICT); validating an
 * upload wants every problem at once, so a user fixes them in one round trip (ProblemCollector).
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

export class ProblemCollector implements ProblemSink {
  readonly problems: FgsnError[] = [];

  report(e: FgsnError): void {
    this.problems.push(e);
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
}
