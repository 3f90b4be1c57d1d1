{{- define "lanewatch.fullname" -}}{{ .Release.Name }}-lanewatch{{- end -}}
{{- define "lanewatch.labels" -}}
app.kubernetes.io/name: lanewatch
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}
{{- define "lanewatch.selector" -}}
app.kubernetes.io/name: lanewatch
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
