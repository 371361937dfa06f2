import { describe, expect, it } from 'vitest';
import { deepMerge, goFloat, Renderer } from './helm-render.js';

/** Renders one template text with `.Values` = values (numbers as helm sees them: float64). */
function render(text: string, values: Record<string, unknown> = {}, defines = ''): string {
  const r = new Renderer(
    new Map([
      ['t', text],
      ['_helpers.tpl', defines],
    ]),
  );
  return r.render('t', { Values: values as never, Release: { Name: 'rel' } });
}

describe('test renderer: Go template semantics the chart relies on', () => {
  it('prints float64 values as Go does (%v), ints as integers', () => {
    expect([8080, 30000, 123456, 1e6, 16777216, 68719476736, 0.5, 0].map(goFloat)).toEqual([
      '8080',
      '30000',
      '123456',
      '1e+06',
      '1.6777216e+07',
      '6.8719476736e+10',
      '0.5',
      '0',
    ]);
    expect(render('{{ .Values.n }} {{ .Values.n | int }} {{ .Values.n | int64 | quote }}', { n: 68719476736 })).toBe(
      '6.8719476736e+10 68719476736 "68719476736"',
    );
  });

  it('trims whitespace around {{- and -}}', () => {
    expect(render('a:\n  {{- if true }}\n  b: 1\n  {{- end }}\nc: 2')).toBe('a:\n  b: 1\nc: 2');
    expect(render('x  {{- "y" -}}  z')).toBe('xyz');
  });

  it('if / else if / else, with, range over lists and maps (sorted keys), variables', () => {
    const t =
      '{{ if eq .Values.k "a" }}A{{ else if eq .Values.k "b" }}B{{ else }}C{{ end }}' +
      '{{ with .Values.m }}[{{ range $k, $v := . }}{{ $k }}={{ $v }};{{ end }}]{{ end }}' +
      '{{ range $i, $x := .Values.l }}{{ $i }}:{{ $x }} {{ else }}none{{ end }}' +
      '{{ $acc := list }}{{ range .Values.l }}{{ $acc = append $acc (printf "<%s>" .) }}{{ end }}{{ join "," $acc }}';
    expect(render(t, { k: 'b', m: { z: '1', a: '2' }, l: ['p', 'q'] })).toBe('B[a=2;z=1;]0:p 1:q <p>,<q>');
    expect(render(t, { k: 'x', m: {}, l: [] })).toBe('Cnone');
  });

  it('include, nindent, toYaml, default, ternary, and/or returning operands', () => {
    const defines = '{{- define "lbl" -}}app: {{ .Release.Name }}{{- end }}';
    expect(render('meta:\n  labels:\n    {{- include "lbl" . | nindent 4 }}', {}, defines)).toBe('meta:\n  labels:\n    app: rel');
    expect(render('r:\n  {{- toYaml .Values.r | nindent 2 }}', { r: { limits: { cpu: '1' }, l: ['a'] } })).toBe(
      'r:\n  limits:\n    cpu: "1"\n  l:\n  - a',
    );
    expect(render('{{ default "d" .Values.e }} {{ default "d" .Values.f }}', { e: '', f: 'v' })).toBe('d v');
    expect(render('{{ ternary "y" "n" .Values.b }} {{ or .Values.e "x" }} {{ and "a" .Values.e }}|', { b: true, e: '' })).toBe('y x |');
  });

  it('is strict where helm would silently render something wrong', () => {
    expect(() => render('{{ .Values.api.nope }}', { api: {} })).toThrow('map has no entry for key "nope"');
    expect(() => render('{{ .Values.a.b }}', { a: 'text' })).toThrow('nil pointer evaluating');
    expect(() => render('{{ gt .Values.n 0 }}', { n: 3 })).toThrow('incompatible types for comparison (float and int)');
    expect(render('{{ gt (int .Values.n) 0 }}', { n: 3 })).toBe('true');
    expect(() => render('{{ .Values.m }}', { m: { a: 1 } })).toThrow('printing a map');
    expect(() => render('{{ tpl "x" . }}')).toThrow('function "tpl" is not supported');
    expect(() => render('{{ if true }}x')).toThrow('missing {{end}}');
    expect(() => render('{{ required "need x" .Values.x }}', { x: '' })).toThrow('need x');
    expect(() => render('{{ fail "stop here" }}')).toThrow('stop here');
  });

  it('merges value overrides like helm: maps merge, lists replace, null deletes', () => {
    expect(deepMerge({ a: { b: 1, c: [1, 2] }, d: 1 }, { a: { c: [3] }, d: null })).toEqual({ a: { b: 1, c: [3] } });
  });
});
