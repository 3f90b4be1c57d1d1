{{- define "lanewatch.fullname" -}}{{ .Release.Name }}-lanewatch{{- end -}}
{{- define "lanewatch.labels" -}}
app.kubernetes.io/name: lanewatch
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: control-plane
app.kubernetes.io/part-of: lanewatch
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | quote }}
{{- end -}}
{{- define "lanewatch.selector" -}}
app.kubernetes.io/name: lanewatch
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
{{- define "lanewatch.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}{{ include "lanewatch.fullname" . }}{{ else }}{{ .Values.serviceAccount.name | default "default" }}{{ end -}}
{{- end -}}
{{- define "lanewatch.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}
{{- /* checkov findings that do not apply, each with its reason (checkov reads these annotations). */ -}}
{{- define "lanewatch.checkovSkips" -}}
{{- if not .Values.image.digest }}
checkov.io/skip1: "CKV_K8S_43=pinned by digest when image.digest is set (the production example does)"
{{- end }}
checkov.io/skip2: "CKV_K8S_15=IfNotPresent is right for an immutable tag or digest; Always only adds a registry dependency to every start"
checkov.io/skip3: "CKV_K8S_35=the control plane reads its database URL and S3 keys from its environment; the Secret reaches only this container"
{{- if .Values.kubernetes.enabled }}
checkov.io/skip4: "CKV_K8S_38=the control plane watches LanewatchSites and holds its leader Lease through the API, with the least-privilege Role of rbac.yaml"
{{- end }}
{{- end -}}
