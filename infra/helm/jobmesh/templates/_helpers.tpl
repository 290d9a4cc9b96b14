{{/*
Names and labels. Every object name is "<fullname>-<suffix>", cut to the 63 characters a DNS
label allows.
*/}}
{{- define "jobmesh.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "jobmesh.fullname" -}}
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

{{/* (dict "root" $ "suffix" "gateway-ocr") */}}
{{- define "jobmesh.componentName" -}}
{{- printf "%s-%s" (include "jobmesh.fullname" .root) .suffix | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "jobmesh.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: immutable in a Deployment, so only name, instance and component. */}}
{{- define "jobmesh.selectorLabels" -}}
app.kubernetes.io/name: {{ include "jobmesh.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end }}

{{/* (dict "root" $ "component" "gateway-ocr"); component may be empty for shared objects. */}}
{{- define "jobmesh.labels" -}}
helm.sh/chart: {{ include "jobmesh.chart" .root }}
{{ include "jobmesh.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: jobmesh
{{- end }}

{{- define "jobmesh.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "jobmesh.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "jobmesh.configMapName" -}}
{{- include "jobmesh.componentName" (dict "root" . "suffix" "config") }}
{{- end }}

{{- define "jobmesh.secretName" -}}
{{- if .Values.secrets.existingSecret }}
{{- .Values.secrets.existingSecret }}
{{- else }}
{{- include "jobmesh.componentName" (dict "root" . "suffix" "secrets") }}
{{- end }}
{{- end }}

{{/* (dict "root" $ "device" "cpu"|"gpu") -> repository:tag */}}
{{- define "jobmesh.image" -}}
{{- $img := ternary .root.Values.gpuImage .root.Values.image (eq .device "gpu") }}
{{- printf "%s:%s" $img.repository (default .root.Chart.AppVersion $img.tag) }}
{{- end }}

{{- define "jobmesh.imagePullPolicy" -}}
{{- $img := ternary .root.Values.gpuImage .root.Values.image (eq .device "gpu") }}
{{- $img.pullPolicy }}
{{- end }}

{{/*
Merged settings of one gateway: gatewayDefaults overlaid with gateways.<domain>, as YAML (read
back with fromYaml). (dict "root" $ "domain" "ocr")
*/}}
{{- define "jobmesh.gatewayConfig" -}}
{{- $entry := get .root.Values.gateways .domain | default dict }}
{{- $cfg := mergeOverwrite (deepCopy .root.Values.gatewayDefaults) (deepCopy $entry) }}
{{- if not $cfg.port }}
{{- fail (printf "gateways.%s.port is required (shared/config.py DOMAIN_PORTS)" .domain) }}
{{- end }}
{{- if not $cfg.metricsPort }}
{{- fail (printf "gateways.%s.metricsPort is required (shared/config.py GATEWAY_METRICS_PORTS)" .domain) }}
{{- end }}
{{- $_ := set $cfg "module" (default (printf "services.%s" .domain) $cfg.module) }}
{{- include "jobmesh.checkEnv" (dict "env" $cfg.env "where" (printf "gateways.%s.env" .domain)) }}
{{- toYaml $cfg }}
{{- end }}

{{/*
Merged settings of one worker queue: workerDefaults.<device> overlaid with
workers.<domain>.<device>, plus the domain's metricsPort and module.
(dict "root" $ "domain" "ocr" "device" "gpu")
*/}}
{{- define "jobmesh.workerConfig" -}}
{{- $domainEntry := get .root.Values.workers .domain | default dict }}
{{- $entry := get $domainEntry .device | default dict }}
{{- $cfg := mergeOverwrite (deepCopy (get .root.Values.workerDefaults .device)) (deepCopy $entry) }}
{{- if not $domainEntry.metricsPort }}
{{- fail (printf "workers.%s.metricsPort is required (shared/config.py WORKER_METRICS_PORTS)" .domain) }}
{{- end }}
{{- $_ := set $cfg "metricsPort" $domainEntry.metricsPort }}
{{- $_ = set $cfg "module" (default (printf "workers.%s" .domain) $domainEntry.module) }}
{{- $_ = set $cfg "queue" (printf "%s.%s" .domain .device) }}
{{- $_ = set $cfg "taskTimeLimitSeconds" (int (default .root.Values.jobs.taskTimeLimitSeconds $domainEntry.taskTimeLimitSeconds)) }}
{{- include "jobmesh.checkEnv" (dict "env" $cfg.env "where" (printf "workers.%s.%s.env" .domain .device)) }}
{{- toYaml $cfg }}
{{- end }}

{{/*
JOBMESH_VISIBILITY_TIMEOUT_S for every process: jobs.visibilityTimeoutSeconds, or 2 x the longest
task limit of any domain. It must outlast the longest limit, not each worker's own: kombu keeps
one unacked index for the whole broker, and any worker restores every message unacked for longer
than ITS visibility timeout, so an OCR worker with a short one would hand a compression task
that is still running to a second worker.
*/}}
{{- define "jobmesh.visibilityTimeout" -}}
{{- $longest := int .Values.jobs.taskTimeLimitSeconds }}
{{- range $domain, $entry := .Values.workers }}
{{- $longest = max $longest (int (default 0 (get (default dict $entry) "taskTimeLimitSeconds"))) }}
{{- end }}
{{- $timeout := int (default (mul 2 $longest) .Values.jobs.visibilityTimeoutSeconds) }}
{{- if le $timeout $longest }}
{{- fail (printf "jobs.visibilityTimeoutSeconds (%d) must exceed the longest task time limit (%d s)" $timeout $longest) }}
{{- end }}
{{- $timeout }}
{{- end }}

{{/*
Settings the chart sets itself: repeating them in `config` or a per-process `env` would split
one decision in two places (e.g. a task time limit that no longer matches the workers' grace
period), and credentials must never land in a ConfigMap.
*/}}
{{- define "jobmesh.reservedEnv" -}}
JOBMESH_REDIS_URL JOBMESH_S3_ENDPOINT JOBMESH_S3_PUBLIC_ENDPOINT JOBMESH_S3_SECURE JOBMESH_S3_REGION JOBMESH_ARTIFACTS_BUCKET JOBMESH_MODELS_BUCKET JOBMESH_S3_ACCESS_KEY JOBMESH_S3_SECRET_KEY JOBMESH_API_KEYS JOBMESH_API_KEYS_FILE JOBMESH_TASK_TIME_LIMIT_S JOBMESH_VISIBILITY_TIMEOUT_S JOBMESH_QUEUE_PREFERENCE JOBMESH_MODEL_CACHE_DIR JOBMESH_DEVICE JOBMESH_HOST JOBMESH_PORT JOBMESH_METRICS_PORT JOBMESH_SHUTDOWN_GRACE_S JOBMESH_ORT_THREADS JOBMESH_WORKER_CONCURRENCY
{{- end }}

{{/* (dict "env" <map> "where" "config") fails on a reserved or non-JOBMESH_ name. */}}
{{- define "jobmesh.checkEnv" -}}
{{- $reserved := splitList " " (include "jobmesh.reservedEnv" .) }}
{{- range $name, $_ := .env }}
{{- if not (hasPrefix "JOBMESH_" $name) }}
{{- fail (printf "%s.%s: only JOBMESH_* settings belong here" $.where $name) }}
{{- end }}
{{- if has $name $reserved }}
{{- fail (printf "%s.%s is set by the chart from its own values (see values.yaml)" $.where $name) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Redis, parsed once from redis.url. Returns YAML: scheme, host (host:port), db, query (with
its "?", or empty: e.g. rediss options), tls.
*/}}
{{- define "jobmesh.redis" -}}
{{- $u := urlParse .Values.redis.url }}
{{- if not (has $u.scheme (list "redis" "rediss")) }}
{{- fail "redis.url must start with redis:// or rediss://" }}
{{- end }}
{{- if $u.userinfo }}
{{- fail "redis.url must not carry credentials (it lands in a ConfigMap): set redis.auth.enabled and the redis-password Secret key" }}
{{- end }}
{{- $host := $u.host }}
{{- if not (contains ":" $host) }}
{{- $host = printf "%s:6379" $host }}
{{- end }}
{{- $db := trimPrefix "/" $u.path | default "0" }}
{{- if not (regexMatch "^[0-9]+$" $db) }}
{{- fail (printf "redis.url: the path must be a DB index, got %q" $u.path) }}
{{- end }}
scheme: {{ $u.scheme }}
host: {{ $host | quote }}
db: {{ $db | quote }}
query: {{ ternary (printf "?%s" $u.query) "" (ne $u.query "") | quote }}
tls: {{ eq $u.scheme "rediss" }}
{{- end }}

{{/*
host:port for KEDA's Redis scaler. KEDA's operator runs in its own namespace, where a bare
Service name from redis.url would not resolve: qualify it with the release's namespace.
*/}}
{{- define "jobmesh.kedaRedisAddress" -}}
{{- if .Values.keda.redisAddress }}
{{- .Values.keda.redisAddress }}
{{- else }}
{{- $r := include "jobmesh.redis" . | fromYaml }}
{{- $parts := splitList ":" $r.host }}
{{- $hostname := first $parts }}
{{- if contains "." $hostname }}
{{- $r.host }}
{{- else }}
{{- printf "%s.%s.svc:%s" $hostname .Release.Namespace (last $parts) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Environment every jobmesh container gets besides the ConfigMap: S3 credentials and, with Redis
AUTH, the broker URL with the password spliced in by Kubernetes' $(VAR) expansion (the
password never enters a ConfigMap or the rendered manifest).
*/}}
{{- define "jobmesh.commonEnv" -}}
{{- $secret := include "jobmesh.secretName" . }}
- name: JOBMESH_S3_ACCESS_KEY
  valueFrom:
    secretKeyRef: {name: {{ $secret }}, key: s3-access-key}
- name: JOBMESH_S3_SECRET_KEY
  valueFrom:
    secretKeyRef: {name: {{ $secret }}, key: s3-secret-key}
{{- if .Values.redis.auth.enabled }}
{{- $r := include "jobmesh.redis" . | fromYaml }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ $secret }}, key: redis-password}
- name: JOBMESH_REDIS_URL
  value: {{ printf "%s://:$(REDIS_PASSWORD)@%s/%s%s" $r.scheme $r.host $r.db $r.query | quote }}
{{- end }}
{{- end }}

{{/* Extra env from a name -> value map, sorted (stable renders). */}}
{{- define "jobmesh.extraEnv" -}}
{{- range $name := keys . | sortAlpha }}
- name: {{ $name }}
  value: {{ get $ $name | toString | quote }}
{{- end }}
{{- end }}

{{/* Pod annotations: config/secret checksums (roll pods on change) and Prometheus scraping.
(dict "root" $ "metricsPort" 9101 "extra" <map>) */}}
{{- define "jobmesh.podAnnotations" -}}
checksum/config: {{ include (print .root.Template.BasePath "/configmap.yaml") .root | sha256sum }}
{{- if not .root.Values.secrets.existingSecret }}
checksum/secrets: {{ include (print .root.Template.BasePath "/secret.yaml") .root | sha256sum }}
{{- end }}
{{- if .root.Values.metrics.podAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ int .metricsPort | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- with .extra }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Scheduling fields shared by gateways and workers. (dict "cfg" $cfg) */}}
{{- define "jobmesh.scheduling" -}}
{{- with .cfg.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .cfg.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .cfg.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
