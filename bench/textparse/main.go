// Throughput of Prometheus' own text parsers on one file, for bench/textparse/compare.sh: the
// scraper's textparse.PromParser (as scrape.go drives it: Next, Series, Labels) and
// common/expfmt's SampleDecoder (the client library's text decoder), each timed RUNS times on
// the same bytes in memory; the best run counts. Prints one line per parser:
//
//	<name> samples=<n> sum=<sum of values> best_s=<seconds> mibps=<MiB/s>
//
// The sample count and value sum let compare.sh check that every parser read the same samples
// before any speed is compared.
package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/textparse"
)

type result struct {
	samples int
	sum     float64
}

// promParse reads every sample with textparse.PromParser; withLabels also materialises each
// sample's label set, as the scrape loop does before appending.
func promParse(data []byte, withLabels bool) (result, error) {
	var (
		r   result
		res labels.Labels
	)
	st := labels.NewSymbolTable()
	p := textparse.NewPromParser(data, st, false)
	for {
		t, err := p.Next()
		switch t {
		case textparse.EntryInvalid:
			if errors.Is(err, io.EOF) {
				return r, nil
			}
			return r, err
		case textparse.EntrySeries:
			_, _, v := p.Series()
			r.samples++
			r.sum += v
			if withLabels {
				p.Labels(&res)
			}
		default:
			// TYPE, HELP, comments: skipped, as our parser skips them.
		}
	}
}

// expfmtDecode reads every sample with expfmt's text decoder (text format 0.0.4). expfmt
// rejects a metric family that appears twice (the copies of the input repeat every HELP line),
// so each copy — a stretch that starts with the input's first line — is decoded on its own;
// the bytes are the same.
func expfmtDecode(data []byte) (result, error) {
	var r result
	first := data[:bytes.IndexByte(data, '\n')+1]
	for len(data) > 0 {
		end := bytes.Index(data[len(first):], append([]byte{'\n'}, first...))
		chunk := data
		if end >= 0 {
			chunk = data[:len(first)+end+1]
		}
		data = data[len(chunk):]
		got, err := expfmtDecodeOne(chunk)
		if err != nil {
			return r, err
		}
		r.samples += got.samples
		r.sum += got.sum
	}
	return r, nil
}

func expfmtDecodeOne(data []byte) (result, error) {
	var r result
	dec := expfmt.SampleDecoder{
		Dec:  expfmt.NewDecoder(bytes.NewReader(data), expfmt.NewFormat(expfmt.TypeTextPlain)),
		Opts: &expfmt.DecodeOptions{Timestamp: model.TimeFromUnixNano(0)},
	}
	vec := make(model.Vector, 0, 64)
	for {
		if err := dec.Decode(&vec); err != nil {
			if errors.Is(err, io.EOF) {
				return r, nil
			}
			return r, err
		}
		for _, s := range vec {
			r.samples++
			r.sum += float64(s.Value)
		}
		vec = vec[:0]
	}
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: textparse-bench FILE RUNS")
		os.Exit(2)
	}
	data, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	runs, err := strconv.Atoi(os.Args[2])
	if err != nil || runs < 1 {
		fmt.Fprintln(os.Stderr, "RUNS must be a positive integer")
		os.Exit(2)
	}
	parsers := []struct {
		name string
		run  func([]byte) (result, error)
	}{
		{"promparse", func(d []byte) (result, error) { return promParse(d, true) }},
		{"promparse-nolabels", func(d []byte) (result, error) { return promParse(d, false) }},
		{"expfmt", expfmtDecode},
	}
	for _, p := range parsers {
		var best time.Duration
		var r result
		for i := 0; i < runs; i++ {
			start := time.Now()
			got, err := p.run(data)
			elapsed := time.Since(start)
			if err != nil {
				fmt.Fprintf(os.Stderr, "%s: %v\n", p.name, err)
				os.Exit(1)
			}
			r = got
			if i == 0 || elapsed < best {
				best = elapsed
			}
		}
		fmt.Printf("%s samples=%d sum=%g best_s=%.6f mibps=%.1f\n", p.name, r.samples, r.sum,
			best.Seconds(), float64(len(data))/(1<<20)/best.Seconds())
	}
}
