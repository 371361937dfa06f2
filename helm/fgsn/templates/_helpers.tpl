{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "fgsn.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-qualified name; the release name alone when it already contains the chart name. */}}
{{- define "fgsn.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "fgsn.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "fgsn.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fgsn.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "fgsn.labels" -}}
helm.sh/chart: {{ include "fgsn.chart" . }}
{{ include "fgsn.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "fgsn.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "fgsn.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "fgsn.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "fgsn.workerImage" -}}
{{- $repository := default .Values.image.repository .Values.worker.image.repository }}
{{- $tag := default (default .Chart.AppVersion .Values.image.tag) .Values.worker.image.tag }}
{{- printf "%s:%s" $repository $tag }}
{{- end }}

{{/* Name of the Secret the chart writes (REDIS_URL, API keys, S3 credentials, whichever it owns). */}}
{{- define "fgsn.secretName" -}}
{{- include "fgsn.fullname" . }}
{{- end }}

{{/* True when the chart's own Secret has at least one key. */}}
{{- define "fgsn.ownsSecret" -}}
{{- if or (not .Values.redis.existingSecret) (not .Values.auth.existingSecret) (and (eq .Values.storage.type "s3") (not .Values.storage.s3.existingSecret) .Values.storage.s3.accessKeyId) }}true{{ end }}
{{- end }}

{{/* Settings that cannot be expressed in the schema alone; fails the render with a clear message. */}}
{{- define "fgsn.validate" -}}
{{- if and (not .Values.redis.url) (not .Values.redis.existingSecret) }}
{{- fail "set redis.url (e.g. redis://:password@redis:6379/0) or redis.existingSecret: fgsn needs an external Redis" }}
{{- end }}
{{- if and (eq .Values.storage.type "s3") (not .Values.storage.s3.bucket) }}
{{- fail "storage.type is s3: set storage.s3.bucket" }}
{{- end }}
{{- if and (not .Values.storage.s3.existingSecret) (ne (empty .Values.storage.s3.accessKeyId) (empty .Values.storage.s3.secretAccessKey)) }}
{{- fail "storage.s3.accessKeyId and storage.s3.secretAccessKey go together" }}
{{- end }}
{{- if and .Values.worker.enabled (eq .Values.worker.executionProvider "cuda") (not .Values.worker.gpu.enabled) }}
{{- fail "worker.executionProvider is cuda but worker.gpu.enabled is false: enable the GPU or use cpu" }}
{{- end }}
{{- if and .Values.worker.enabled (eq (.Values.worker.computeDtype | default "float32") "float16") (ne .Values.worker.executionProvider "cuda") }}
{{- fail "worker.computeDtype float16 needs worker.executionProvider cuda (the service refuses it on cpu)" }}
{{- end }}
{{- if and .Values.worker.enabled .Values.worker.keda.enabled (not .Values.worker.keda.redisAddress) }}
{{- fail "worker.keda.enabled: set worker.keda.redisAddress (host:port of Redis as KEDA reaches it)" }}
{{- end }}
{{- end }}

{{/* Environment from Secrets: the service's credentials, never in the ConfigMap. */}}
{{- define "fgsn.secretEnv" -}}
- name: REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ default (include "fgsn.secretName" .) .Values.redis.existingSecret }}
      key: {{ ternary .Values.redis.existingSecretKey "REDIS_URL" (not (empty .Values.redis.existingSecret)) }}
- name: FGSN_API_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ default (include "fgsn.secretName" .) .Values.auth.existingSecret }}
      key: FGSN_API_KEYS
- name: FGSN_ADMIN_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ default (include "fgsn.secretName" .) .Values.auth.existingSecret }}
      key: FGSN_ADMIN_KEYS
      optional: true
{{- if and (eq .Values.storage.type "s3") (or .Values.storage.s3.existingSecret .Values.storage.s3.accessKeyId) }}
- name: FGSN_S3_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ default (include "fgsn.secretName" .) .Values.storage.s3.existingSecret }}
      key: FGSN_S3_ACCESS_KEY_ID
- name: FGSN_S3_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ default (include "fgsn.secretName" .) .Values.storage.s3.existingSecret }}
      key: FGSN_S3_SECRET_ACCESS_KEY
{{- end }}
{{- end }}

{{/* /data: one claim shared by the API and the workers (uploads are written by one, read by the other). */}}
{{- define "fgsn.dataVolume" -}}
- name: data
  persistentVolumeClaim:
    claimName: {{ default (printf "%s-data" (include "fgsn.fullname" .)) .Values.storage.persistence.existingClaim }}
{{- end }}

{{/* Checksums of the settings, so pods restart when the ConfigMap or the Secret changes. */}}
{{- define "fgsn.configChecksums" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
checksum/secret: {{ include (print .Template.BasePath "/secret.yaml") . | sha256sum }}
{{- end }}
