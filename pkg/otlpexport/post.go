package otlpexport

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"google.golang.org/protobuf/proto"
)

// send marshals msg and POSTs it to url, gzip-compressed (every collector
// accepts it; flow logs shrink about tenfold). With retry, a retryable
// failure is tried again with backoff (honouring Retry-After) until
// retryFor has passed or ctx ends.
func (e *Exporter) send(ctx context.Context, url, signal string, msg proto.Message, retry bool) error {
	raw, err := proto.Marshal(msg)
	if err != nil {
		return fmt.Errorf("otlp: marshal %s: %w", signal, err)
	}
	var body bytes.Buffer
	zw := gzip.NewWriter(&body)
	zw.Write(raw)
	if err := zw.Close(); err != nil {
		return fmt.Errorf("otlp: compress %s: %w", signal, err)
	}
	deadline := time.Now().Add(retryFor)
	backoff := firstBackoff
	for {
		wait, err := e.post(ctx, url, body.Bytes())
		e.noteResult(signal, err)
		if err == nil || !retry || !isRetryable(err) {
			return err
		}
		if wait <= 0 {
			wait = backoff
			backoff = min(2*backoff, maxBackoff)
		}
		if time.Now().Add(wait).After(deadline) {
			return err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
	}
}

// post makes one request. It returns the wait a 429 or 503 asked for
// (Retry-After, in seconds), and a retryable error when the request may
// succeed later.
func (e *Exporter) post(ctx context.Context, url string, body []byte) (time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, fmt.Errorf("otlp: %w", err)
	}
	for k, v := range e.opts.Headers {
		req.Header.Set(k, v)
	}
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("Content-Encoding", "gzip")
	req.Header.Set("User-Agent", "sstrace/"+e.scope.Version)
	resp, err := e.client.Do(req)
	if err != nil {
		return 0, retryable{fmt.Errorf("otlp: %w", err)}
	}
	// Read (a bounded amount of) the body so that the connection is
	// reused; its content (an ExportLogsServiceResponse, or a Status on
	// failure) is not needed.
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch code := resp.StatusCode; {
	case code >= 200 && code < 300:
		return 0, nil
	case code == http.StatusTooManyRequests || code == http.StatusBadGateway ||
		code == http.StatusServiceUnavailable || code == http.StatusGatewayTimeout:
		var wait time.Duration
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
			wait = min(time.Duration(s)*time.Second, maxBackoff)
		}
		return wait, retryable{fmt.Errorf("otlp: POST %s: %s", url, resp.Status)}
	default:
		return 0, fmt.Errorf("otlp: POST %s: %s", url, resp.Status)
	}
}
