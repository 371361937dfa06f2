/**
 * PEFT's target_modules matching, without ever running a tenant's pattern on a backtracking engine.
 *
 * PEFT (tuners_utils.check_target_module_exists): a string is a regular expression that must match the
 * whole module path (`re.fullmatch`); the string "all-linear" means every linear layer but the output head;
 * a list matches a module whose path equals an entry or ends with "." + entry.
 *
 * Patterns are compiled with re2js, a pure-JS port of RE2: matching is linear in the input whatever the
 * pattern, so "(a|a)*b" costs the same as "q_proj" (issue 15: `new RegExp` on it took 15 s of event loop).
 * RE2 has no backreferences or lookaround; a pattern using them is refused with a coded error rather than
 * approximated. Pattern length is bounded so compiling stays cheap.
 */
import { RE2JS, RE2JSException } from 're2js';
import { FgsnError } from '../errors.js';
import { preview } from './json-limits.js';

/** Real target_modules patterns are a few dozen characters. */
export const MAX_TARGET_PATTERN_CHARS = 1024;
/** PEFT configs may list every module path of a model (80 layers x 7 = 560); this leaves room. */
export const MAX_TARGET_LIST_ENTRIES = 10_000;
export const MAX_TARGET_NAME_CHARS = 512;

export const ALL_LINEAR = 'all-linear';

export interface TargetMatcher {
  /** 're2js' for patterns (linear time), 'names' for lists and all-linear (set lookups). */
  readonly engine: 're2js' | 'names';
  /** True when the module at `modulePath` ("model.layers.0.self_attn.q_proj") is targeted. */
  matches(modulePath: string): boolean;
}

function patternError(source: string, problem: string, pattern: string): FgsnError {
  return new FgsnError('ADAPTER_TARGET_PATTERN_INVALID', `${source}: target_modules ${preview(pattern, 100)}: ${problem}`, {
    details: { file: source, maxChars: MAX_TARGET_PATTERN_CHARS },
  });
}

/** Compiles a target_modules value (already shape-checked: a non-empty string or list of strings). */
export function compileTargetModules(raw: string | readonly string[], source: string): TargetMatcher {
  if (typeof raw !== 'string') {
    const names = new Set(raw);
    return {
      engine: 'names',
      matches(modulePath) {
        if (names.has(modulePath)) return true;
        // Every dotted suffix ("q_proj", "self_attn.q_proj", ...): O(path length) lookups, not O(list length).
        for (let i = modulePath.indexOf('.'); i >= 0; i = modulePath.indexOf('.', i + 1)) {
          if (names.has(modulePath.slice(i + 1))) return true;
        }
        return false;
      },
    };
  }
  if (raw === ALL_LINEAR) {
    // PEFT: every nn.Linear except the output layer; which of them are linear is checked against the base.
    return { engine: 'names', matches: (modulePath) => modulePath !== 'lm_head' && !modulePath.endsWith('.lm_head') };
  }
  if (raw.length > MAX_TARGET_PATTERN_CHARS) throw patternError(source, `${raw.length} characters; at most ${MAX_TARGET_PATTERN_CHARS}`, raw);
  let re: RE2JS;
  try {
    re = RE2JS.compile(raw);
  } catch (e) {
    if (e instanceof RE2JSException) throw patternError(source, `not a supported regular expression (RE2 syntax: no backreferences or lookaround): ${e.message.slice(0, 200)}`, raw);
    throw e;
  }
  // testExact: the whole input must match, as re.fullmatch; it needs no capture groups (RE2's DFA path).
  return { engine: 're2js', matches: (modulePath) => re.testExact(modulePath) };
}
