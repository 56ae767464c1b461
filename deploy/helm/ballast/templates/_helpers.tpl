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

{{/*
One service's settings: .Values.defaults with the service's own keys on top (down to the keys
of a probe, of resources or of autoscaling), as YAML; read it back with `fromYaml`.
Takes (dict "root" $ "spec" SERVICE_VALUES).
*/}}
{{- define "ballast.service" -}}
{{- $svc := mergeOverwrite (deepCopy .root.Values.defaults) (deepCopy .spec) }}
{{- /* mergeOverwrite skips false and 0 in the override: put the service's own values back */}}
{{- range $key, $value := .spec }}
{{- if and (kindIs "map" $value) (kindIs "map" (index $svc $key)) }}
{{- range $subKey, $subValue := $value }}
{{- if not (kindIs "map" $subValue) }}
{{- $_ := set (index $svc $key) $subKey $subValue }}
{{- end }}
{{- end }}
{{- else }}
{{- $_ := set $svc $key $value }}
{{- end }}
{{- end }}
{{- toYaml $svc }}
{{- end -}}

{{/*
"true" when an autoscaler (HPA or KEDA) owns the service's replica count: autoscaling.mode is
not none and the service is an enabled consumer with autoscaling.enabled. Takes
(dict "root" $ "svc" MERGED_SERVICE).
*/}}
{{- define "ballast.autoscaled" -}}
{{- if and (ne .root.Values.autoscaling.mode "none") .svc.consumer .svc.autoscaling.enabled -}}
true
{{- end -}}
{{- end -}}

{{/* The Kafka consumer groups of a service: "<prefix><service>" and one per lane. */}}
{{- define "ballast.consumerGroups" -}}
{{- $group := printf "%s%s" .root.Values.kafka.topicPrefix .name }}
{{- $groups := list $group }}
{{- range .svc.lanes }}
{{- $groups = append $groups (printf "%s.%s" $group .) }}
{{- end }}
{{- toJson $groups }}
{{- end -}}

{{/* The Secret and key the migration Job reads the database URL from (it runs before the
chart's own Secret exists, so it has a hook Secret of its own). */}}
{{- define "ballast.migrateSecretName" -}}
{{- .Values.database.existingSecret | default (printf "%s-migrate" .Release.Name | trunc 63 | trimSuffix "-") -}}
{{- end -}}

{{/* Where a service's pod mounts the JWKS of auth.jwksConfigMap. */}}
{{- define "ballast.jwksMountPath" -}}
/etc/ballast/auth
{{- end -}}

{{/*
BALLAST_AUTH_JWKS: auth.jwksUrl, or the file of auth.jwksConfigMap as mounted in the pods.
Fails naming auth.jwksUrl when neither is given, and when both are.
*/}}
{{- define "ballast.authJwks" -}}
{{- $auth := .Values.auth | default dict }}
{{- if and $auth.jwksUrl $auth.jwksConfigMap }}
{{- fail "auth.jwksUrl and auth.jwksConfigMap are both set: give one (the URL of the issuer's JWKS, or a ConfigMap holding jwks.json)" }}
{{- else if $auth.jwksConfigMap }}
{{- printf "%s/jwks.json" (include "ballast.jwksMountPath" .) }}
{{- else }}
{{- required "auth.jwksUrl is required: the JWKS URL of the issuer of the bearer tokens (e.g. https://idp.example/.well-known/jwks.json), or set auth.jwksConfigMap to a ConfigMap holding jwks.json (docs/auth.md)" $auth.jwksUrl }}
{{- end }}
{{- end -}}

{{/* "true" when the services authenticate to Kafka with SASL (kafka.securityProtocol). */}}
{{- define "ballast.kafkaSasl" -}}
{{- if hasPrefix "SASL_" .Values.kafka.securityProtocol -}}
true
{{- end -}}
{{- end -}}

{{/*
The Secret holding one service's Kafka password: kafka.sasl.existingSecrets.<service>, else
the chart's "<release>-<service>-kafka" made from kafka.sasl.passwords.<service>. Fails naming
the service when neither is given. Takes (dict "root" $ "name" SERVICE).
*/}}
{{- define "ballast.kafkaSecretName" -}}
{{- $sasl := .root.Values.kafka.sasl | default dict }}
{{- $existing := index ($sasl.existingSecrets | default dict) .name }}
{{- $password := index ($sasl.passwords | default dict) .name }}
{{- if $existing }}
{{- $existing }}
{{- else if $password }}
{{- printf "%s-%s-kafka" .root.Release.Name .name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- fail (printf "kafka.sasl.passwords.%s is required (or kafka.sasl.existingSecrets.%s, a Secret holding it under kafka.sasl.passwordKey): %s connects to Kafka as its own SASL principal User:%s; set kafka.securityProtocol=PLAINTEXT only for a broker without ACLs (docs/stack.md)" .name .name .name .name) }}
{{- end }}
{{- end -}}

{{/*
"true" when each service connects to PostgreSQL as a role of its own
(database.serviceRoles.enabled): the migration Job creates the roles as the schema owner.
*/}}
{{- define "ballast.serviceRoles" -}}
{{- $roles := .Values.database.serviceRoles | default dict }}
{{- if $roles.enabled -}}
true
{{- end -}}
{{- end -}}

{{/* The services with a schema (enabled, with platformEnv), as a JSON list, in name order. */}}
{{- define "ballast.databaseServices" -}}
{{- $names := list }}
{{- range $name, $spec := .Values.services }}
{{- if $spec.enabled }}
{{- $svc := include "ballast.service" (dict "root" $ "spec" $spec) | fromYaml }}
{{- if $svc.platformEnv }}
{{- $names = append $names $name }}
{{- end }}
{{- end }}
{{- end }}
{{- toJson $names }}
{{- end -}}

{{/* A service's settings prefix, as its code names it: taxlot-svc -> TAXLOT_SVC_. */}}
{{- define "ballast.settingsPrefix" -}}
{{- printf "%s_" (. | upper | replace "-" "_") -}}
{{- end -}}

{{/* The Secret holding each service's role URL under the service's name, for the services. */}}
{{- define "ballast.rolesSecretName" -}}
{{- .Values.database.serviceRoles.existingSecret | default (printf "%s-db-roles" .Release.Name | trunc 63 | trimSuffix "-") -}}
{{- end -}}

{{/* The same for the migration Job: a hook Secret of its own, as for the owner's URL. */}}
{{- define "ballast.migrateRolesSecretName" -}}
{{- .Values.database.serviceRoles.existingSecret | default (printf "%s-migrate-db-roles" .Release.Name | trunc 63 | trimSuffix "-") -}}
{{- end -}}

{{/* The user of a database URL ("" when it names none). */}}
{{- define "ballast.urlUser" -}}
{{- (urlParse .).userinfo | default "" | splitList ":" | first -}}
{{- end -}}

{{/*
Refuses service-role values that cannot work, naming the value: a role per service needs the
migration Job (the roles own nothing and cannot migrate), a URL for every service with a
schema (unless existingSecret), no service connecting as the owner or sharing another's role,
and no database URL slipped in through sharedEnv or a service's env. Renders nothing.
*/}}
{{- define "ballast.checkServiceRoles" -}}
{{- $roles := .Values.database.serviceRoles }}
{{- if not .Values.migrations.enabled }}
{{- fail "database.serviceRoles.enabled needs migrations.enabled: the services' roles own no table and cannot migrate, and the owner's URL (database.url) must not reach them; set database.serviceRoles.enabled=false to run every service as the owner" }}
{{- end }}
{{- range $key, $_ := .Values.sharedEnv }}
{{- if regexMatch "DATABASE_(OWNER_)?URL$" $key }}
{{- fail (printf "sharedEnv.%s: with database.serviceRoles.enabled the database URLs come from database.url (the owner's, for the migration Job) and database.serviceRoles (each service's own); sharedEnv reaches every service" $key) }}
{{- end }}
{{- end }}
{{- $owner := "" }}
{{- if not .Values.database.existingSecret }}
{{- $owner = include "ballast.urlUser" .Values.database.url }}
{{- end }}
{{- $taken := dict }}
{{- range $name := include "ballast.databaseServices" . | fromJsonArray }}
{{- $spec := index $.Values.services $name }}
{{- range $key, $_ := $spec.env }}
{{- if regexMatch "DATABASE_(OWNER_)?URL$" $key }}
{{- fail (printf "services.%s.env.%s: with database.serviceRoles.enabled the service's database URL is database.serviceRoles.urls.%s (or its key in database.serviceRoles.existingSecret)" $name $key $name) }}
{{- end }}
{{- end }}
{{- if not $roles.existingSecret }}
{{- $url := index ($roles.urls | default dict) $name }}
{{- if not $url }}
{{- fail (printf "database.serviceRoles.urls.%s is required (or database.serviceRoles.existingSecret, a Secret holding each service's URL under its name): %s connects to PostgreSQL as a role of its own, which the migration Job creates (e.g. postgresql+asyncpg://ballast_%s:PASSWORD@HOST:5432/ballast); set database.serviceRoles.enabled=false to run every service as the owner" $name $name ($name | replace "-" "_")) }}
{{- end }}
{{- $user := include "ballast.urlUser" $url }}
{{- if and $owner (eq $user $owner) }}
{{- fail (printf "database.serviceRoles.urls.%s connects as %s, the schema owner of database.url: give the service a role of its own" $name $user) }}
{{- end }}
{{- if hasKey $taken $user }}
{{- fail (printf "database.serviceRoles.urls.%s and database.serviceRoles.urls.%s both connect as %s: each service needs a role of its own (it is granted only its own schema)" (index $taken $user) $name $user) }}
{{- end }}
{{- $_ := set $taken $user $name }}
{{- end }}
{{- end }}
{{- end -}}
