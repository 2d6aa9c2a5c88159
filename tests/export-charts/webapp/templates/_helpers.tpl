{{/* Bitnami's image helper: the global registry wins; a digest replaces the tag. */}}
{{- define "webapp.image" -}}
{{- $root := index . 0 -}}
{{- $image := index . 1 -}}
{{- $registry := $root.Values.global.imageRegistry | default $image.registry -}}
{{- if $image.digest -}}
{{- printf "%s/%s@%s" $registry $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s/%s:%s" $registry $image.repository ($image.tag | default $root.Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{/* ingress-nginx's: the image's own registry wins over the global one; tag and digest both. */}}
{{- define "webapp.controllerImage" -}}
{{- $root := index . 0 -}}
{{- $image := index . 1 -}}
{{- $registry := $image.registry | default $root.Values.global.imageRegistry -}}
{{- $name := $image.image -}}
{{- $digest := $image.digest -}}
{{- if $image.chroot -}}
{{- $name = printf "%s-chroot" $image.image -}}
{{- $digest = $image.digestChroot -}}
{{- end -}}
{{- printf "%s/%s:%s" $registry $name $image.tag -}}
{{- if $digest -}}{{- printf "@%s" $digest -}}{{- end -}}
{{- end -}}
