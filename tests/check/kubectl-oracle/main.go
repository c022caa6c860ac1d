// Manual reference for src/manifest.rs (not run by CI): prints, one line per object, what
// kubectl's resource builder — the one `kubectl apply -f` uses (unstructured, flattened lists,
// continue on error) — reads from the given paths, without a cluster. Build and run:
//
//	cd tests/check/kubectl-oracle && go build -o "${SOVEREIGN_CACHE:-$HOME/.cache/sovereign-operator}/bin/kubectl-oracle" .
//	RECURSIVE=1 kubectl-oracle tests/check/cases/typed-configmaplist
//
// and compare with `sovereign-operator check` on the same path.
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"k8s.io/cli-runtime/pkg/resource"
)

func main() {
	recursive := os.Getenv("RECURSIVE") != ""
	r := resource.NewLocalBuilder().Unstructured().ContinueOnError().
		FilenameParam(false, &resource.FilenameOptions{Filenames: os.Args[1:], Recursive: recursive}).
		Flatten().Do()
	infos, err := r.Infos()
	for _, i := range infos {
		b, _ := json.Marshal(i.Object)
		fmt.Println(i.Source, string(b))
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}
