package otlpexport

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Env is what the OpenTelemetry environment variables say, read as every
// OTLP exporter reads them (the OpenTelemetry specification's "OTLP
// Exporter" and "Resource SDK" variables), for what sstrace uses; a fleet's
// agents are often configured that way (a DaemonSet's env, a unit's
// Environment=). Command-line flags win over them.
type Env struct {
	// Endpoint is OTEL_EXPORTER_OTLP_ENDPOINT: the collector's base URL.
	Endpoint string
	// Headers is OTEL_EXPORTER_OTLP_HEADERS: name=value pairs separated by
	// commas, values URL-decoded.
	Headers map[string]string
	// Timeout is OTEL_EXPORTER_OTLP_TIMEOUT, given in milliseconds (0: not
	// set).
	Timeout time.Duration
	// Resource is OTEL_RESOURCE_ATTRIBUTES (key=value pairs separated by
	// commas, values URL-decoded) with OTEL_SERVICE_NAME as service.name.
	Resource map[string]string
}

// ReadEnv reads the variables through getenv (os.Getenv). A value it
// cannot read, or OTEL_EXPORTER_OTLP_PROTOCOL asking for anything but
// http/protobuf, is an error naming the variable.
func ReadEnv(getenv func(string) string) (Env, error) {
	var e Env
	if p := getenv("OTEL_EXPORTER_OTLP_PROTOCOL"); p != "" && p != "http/protobuf" {
		return e, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL=%s: sstrace exports over http/protobuf only", p)
	}
	e.Endpoint = strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_ENDPOINT"))
	headers, err := pairs("OTEL_EXPORTER_OTLP_HEADERS", getenv("OTEL_EXPORTER_OTLP_HEADERS"))
	if err != nil {
		return e, err
	}
	if len(headers) > 0 {
		e.Headers = make(map[string]string, len(headers))
		for k, v := range headers {
			if !addHeader(e.Headers, k, v) {
				return e, fmt.Errorf("OTEL_EXPORTER_OTLP_HEADERS: %q is not a header name=value", k)
			}
		}
	}
	if t := strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_TIMEOUT")); t != "" {
		ms, err := strconv.ParseUint(t, 10, 32)
		if err != nil || ms == 0 {
			return e, fmt.Errorf("OTEL_EXPORTER_OTLP_TIMEOUT=%s: want milliseconds, a positive integer", t)
		}
		e.Timeout = time.Duration(ms) * time.Millisecond
	}
	if e.Resource, err = pairs("OTEL_RESOURCE_ATTRIBUTES", getenv("OTEL_RESOURCE_ATTRIBUTES")); err != nil {
		return e, err
	}
	if name := strings.TrimSpace(getenv("OTEL_SERVICE_NAME")); name != "" {
		if e.Resource == nil {
			e.Resource = map[string]string{}
		}
		e.Resource["service.name"] = name
	}
	return e, nil
}

// pairs reads the specification's list form: key=value pairs separated by
// commas, keys trimmed, values URL-decoded.
func pairs(name, s string) (map[string]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	out := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return nil, fmt.Errorf("%s: %q is not key=value", name, strings.TrimSpace(kv))
		}
		dv, err := url.QueryUnescape(strings.TrimSpace(v))
		if err != nil {
			return nil, fmt.Errorf("%s: value of %s: %w", name, k, err)
		}
		out[k] = dv
	}
	return out, nil
}
