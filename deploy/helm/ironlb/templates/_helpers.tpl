{{/*
Object names are fixed (ironlb-ccm, ironlb-speaker, ...), not prefixed with the release name:
there is one ironlb per cluster, and the names match deploy/default so that an install made with
kustomize can be taken over.
*/}}

{{/* helm.sh/chart: name-version. */}}
{{- define "ironlb.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Standard labels. Call with (dict "root" $ "name" "ironlb-ccm"); name is app.kubernetes.io/name,
the only label selectors use (as deploy/default does).
*/}}
{{- define "ironlb.labels" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: ironlb
helm.sh/chart: {{ include "ironlb.chart" .root }}
{{- end -}}

{{/* Image reference. Call with (dict "root" $ "image" .Values.images.ccm). */}}
{{- define "ironlb.image" -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository (.image.tag | default .root.Chart.AppVersion | toString) -}}
{{- end -}}
{{- end -}}

{{/* A duration of values.schema.json's form (100ms, 1s, 1m) in milliseconds. */}}
{{- define "ironlb.durationMs" -}}
{{- $d := toString . -}}
{{- $n := regexFind "^[0-9]+" $d | atoi -}}
{{- if hasSuffix "ms" $d -}}{{ $n }}
{{- else if hasSuffix "s" $d -}}{{ mul $n 1000 }}
{{- else if hasSuffix "m" $d -}}{{ mul $n 60000 }}
{{- else -}}{{ fail (printf "%q is not a duration such as 100ms, 1s or 1m" $d) }}
{{- end -}}
{{- end -}}

{{/*
The BGP password Secrets the speaker may read, as a JSON list (sorted, unique): those that
peers[].spec.passwordSecretRef names (with no namespace or the release namespace) and
speaker.passwordSecrets. A passwordSecretRef into another namespace fails: the speaker may read
Secrets only in the release namespace.
*/}}
{{- define "ironlb.passwordSecrets" -}}
{{- $names := list -}}
{{- range .Values.peers -}}
{{- $ref := dig "spec" "passwordSecretRef" dict . -}}
{{- if $ref -}}
{{- if not $ref.name -}}
{{- fail (printf "peers: %s: spec.passwordSecretRef needs a name" .name) -}}
{{- end -}}
{{- if and $ref.namespace (ne $ref.namespace $.Release.Namespace) -}}
{{- fail (printf "peers: %s: spec.passwordSecretRef names a Secret in namespace %s, but ironlb-speaker may read Secrets only in the release namespace %s: create the Secret there and drop the namespace" .name $ref.namespace $.Release.Namespace) -}}
{{- end -}}
{{- $names = append $names $ref.name -}}
{{- end -}}
{{- end -}}
{{- range .Values.speaker.passwordSecrets -}}
{{- $names = append $names . -}}
{{- end -}}
{{- $names | uniq | sortAlpha | toJson -}}
{{- end -}}
