{{/* Chart name and version, as used by the chart label. */}}
{{- define "ballast.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Name of the objects shared by all services (ConfigMap, Secret). */}}
{{- define "ballast.sharedName" -}}
{{- printf "%s-shared" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Name of one service's objects: "<release>-<service>". Takes (dict "root" $ "name" NAME). */}}
{{- define "ballast.serviceName" -}}
{{- printf "%s-%s" .root.Release.Name .name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels common to every object. */}}
{{- define "ballast.commonLabels" -}}
helm.sh/chart: {{ include "ballast.chart" . }}
app.kubernetes.io/part-of: ballast
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
{{- end -}}

{{/* Selector labels of one service. Takes (dict "root" $ "name" NAME). */}}
{{- define "ballast.selectorLabels" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{/* All labels of one service's objects. Takes (dict "root" $ "name" NAME). */}}
{{- define "ballast.serviceLabels" -}}
{{ include "ballast.commonLabels" .root }}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/component: {{ .name }}
{{- end -}}

{{/* The Secret and key holding BALLAST_DATABASE_URL. */}}
{{- define "ballast.databaseSecretName" -}}
{{- .Values.database.existingSecret | default (include "ballast.sharedName" .) -}}
{{- end -}}
{{- define "ballast.databaseSecretKey" -}}
{{- if .Values.database.existingSecret -}}
{{- .Values.database.existingSecretKey -}}
{{- else -}}
database-url
{{- end -}}
{{- end -}}
