{{/*
imagePull.verify: the cosign public key the import Job checks the bundle's signature with
(`import --verify-key`). Given as PEM text (publicKey: put into a hook ConfigMap of the chart's
own), or as an existing ConfigMap or Secret holding it under imagePull.verify.key. Renders
"configMap", "secret" or "" (not checked); fails when more than one source is given.
*/}}
{{- define "offline-images.verifySource" -}}
{{- $v := .Values.imagePull.verify | default dict -}}
{{- $given := list -}}
{{- range $source := list "publicKey" "configMap" "secret" -}}
{{- if get $v $source -}}
{{- $given = append $given $source -}}
{{- end -}}
{{- end -}}
{{- if gt (len $given) 1 -}}
{{- fail (printf "imagePull.verify: give one of publicKey, configMap and secret, not %s" (join " and " $given)) -}}
{{- end -}}
{{- if $v.publicKey -}}
{{- if not (contains "-----BEGIN PUBLIC KEY-----" $v.publicKey) -}}
{{- fail "imagePull.verify.publicKey: not a PEM public key (\"-----BEGIN PUBLIC KEY-----\", as cosign.pub is)" -}}
{{- end -}}
configMap
{{- else if $v.configMap -}}
configMap
{{- else if $v.secret -}}
secret
{{- end -}}
{{- end -}}

{{/* The ConfigMap the chart makes from imagePull.verify.publicKey. */}}
{{- define "offline-images.verifyConfigMapName" -}}
{{- printf "%s-key" (include "offline-images.importName" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Where the key is mounted in the import Job's container. */}}
{{- define "offline-images.verifyKeyPath" -}}
{{- printf "/verify-key/%s" (.Values.imagePull.verify.key | default "cosign.pub") -}}
{{- end -}}

{{/* The import container's volume mount of the key (nothing when not checked). */}}
{{- define "offline-images.verifyMount" -}}
{{- if include "offline-images.verifySource" . }}
- name: verify-key
  mountPath: /verify-key
  readOnly: true
{{- end }}
{{- end -}}

{{/* The pod's volume of the key (nothing when not checked). */}}
{{- define "offline-images.verifyVolume" -}}
{{- $v := .Values.imagePull.verify -}}
{{- $source := include "offline-images.verifySource" . -}}
{{- $item := $v.key | default "cosign.pub" -}}
{{- if eq $source "configMap" }}
# The public key the bundle's signature is checked with.
- name: verify-key
  configMap:
    name: {{ $v.configMap | default (include "offline-images.verifyConfigMapName" .) | quote }}
    items:
      - key: {{ $item | quote }}
        path: {{ $item | quote }}
{{- else if eq $source "secret" }}
# The public key the bundle's signature is checked with.
- name: verify-key
  secret:
    secretName: {{ $v.secret | quote }}
    items:
      - key: {{ $item | quote }}
        path: {{ $item | quote }}
{{- end }}
{{- end -}}
