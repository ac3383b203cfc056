{{/* The labels deploy/base's kustomization puts on every object. */}}
{{- define "repute.labels" -}}
app.kubernetes.io/name: repute-scheduler
app.kubernetes.io/part-of: repute
{{- end }}
