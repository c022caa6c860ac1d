// Runs the Argo CD health checks of argocd-cm-health.yaml in gopher-lua — the Lua 5.1
// interpreter Argo CD embeds, at the version Argo CD pins — set up the way Argo CD's
// util/lua (VM.runLuaWithResourceActionParameters, ExecuteHealthLua) runs a health
// customization from argocd-cm: standard libraries off (a customization's `useOpenLibs`
// defaults to false), then only the package, base and table libraries opened; the object as
// the global `obj`, converted as Argo CD's decodeValue does; a 1 s deadline; the returned
// table encoded with layeh.com/gopher-json and read as {status, message}; a status outside
// Argo CD's health codes becomes Unknown.
//
// Argo CD also opens its own "safe os" module (os.time / os.date); it is Argo CD code, not
// gopher-lua's, so it is left out here: a script using os fails this check, which is
// stricter than Argo CD. Ours do not use it.
//
// Usage: argocd-health CONFIGMAP.yaml CASES.json — prints one line per case and
// "argocd health (gopher-lua): N passed, M failed"; exit 1 on any failure.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	lua "github.com/yuin/gopher-lua"
	luajson "layeh.com/gopher-json"
	"sigs.k8s.io/yaml"
)

type configMap struct {
	Data map[string]string `json:"data"`
}

type testCase struct {
	Kind   string         `json:"kind"`
	Name   string         `json:"name"`
	Object map[string]any `json:"object"`
	Want   string         `json:"want"`
}

type healthStatus struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

// Argo CD's health codes (gitops-engine pkg/health).
var healthCodes = map[string]bool{
	"Unknown": true, "Progressing": true, "Healthy": true, "Suspended": true,
	"Degraded": true, "Missing": true,
}

// decodeValue is Argo CD's conversion of an unstructured object into Lua values.
func decodeValue(l *lua.LState, value any) lua.LValue {
	switch converted := value.(type) {
	case bool:
		return lua.LBool(converted)
	case float64:
		return lua.LNumber(converted)
	case int64:
		return lua.LNumber(converted)
	case string:
		return lua.LString(converted)
	case json.Number:
		return lua.LString(converted)
	case []any:
		arr := l.CreateTable(len(converted), 0)
		for _, item := range converted {
			arr.Append(decodeValue(l, item))
		}
		return arr
	case map[string]any:
		tbl := l.CreateTable(0, len(converted))
		for key, item := range converted {
			tbl.RawSetH(lua.LString(key), decodeValue(l, item))
		}
		return tbl
	}
	return lua.LNil
}

// unstructured turns JSON numbers into int64 when whole and float64 otherwise, as
// Kubernetes' unstructured decoding does.
func unstructured(value any) any {
	switch v := value.(type) {
	case json.Number:
		if i, err := v.Int64(); err == nil {
			return i
		}
		f, _ := v.Float64()
		return f
	case []any:
		for i := range v {
			v[i] = unstructured(v[i])
		}
	case map[string]any:
		for k := range v {
			v[k] = unstructured(v[k])
		}
	}
	return value
}

func run(script string, object map[string]any) (*healthStatus, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
	} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.open), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			return nil, err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", decodeValue(l, object))
	fn, err := l.LoadString(script)
	if err != nil {
		return nil, err
	}
	l.Push(fn)
	if err := l.PCall(0, lua.MultRet, nil); err != nil {
		return nil, err
	}
	returned := l.Get(-1)
	if returned.Type() != lua.LTTable {
		return nil, fmt.Errorf("the script returned %s, not a table", returned.Type())
	}
	encoded, err := luajson.Encode(returned)
	if err != nil {
		return nil, err
	}
	hs := &healthStatus{}
	if err := json.Unmarshal(encoded, hs); err != nil {
		return nil, fmt.Errorf("the returned table is not {status, message}: %s", encoded)
	}
	if !healthCodes[hs.Status] {
		return &healthStatus{Status: "Unknown", Message: "Lua returned an invalid health status"}, nil
	}
	return hs, nil
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: argocd-health CONFIGMAP.yaml CASES.json")
		os.Exit(2)
	}
	cmText, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", os.Args[1], err)
		os.Exit(2)
	}
	var cm configMap
	if err := yaml.Unmarshal(cmText, &cm); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", os.Args[1], err)
		os.Exit(2)
	}
	casesText, err := os.ReadFile(os.Args[2])
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", os.Args[2], err)
		os.Exit(2)
	}
	decoder := json.NewDecoder(bytes.NewReader(casesText))
	decoder.UseNumber()
	var cases []testCase
	if err := decoder.Decode(&cases); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", os.Args[2], err)
		os.Exit(2)
	}
	passed, failed := 0, 0
	for _, c := range cases {
		// Argo CD's key for a custom resource's health: resource.customizations.health.<group>_<kind>.
		key := "resource.customizations.health.sovereign.ai_" + c.Kind
		script, ok := cm.Data[key]
		if !ok {
			failed++
			fmt.Printf("FAIL %s / %s: no %s in the ConfigMap\n", c.Kind, c.Name, key)
			continue
		}
		hs, err := run(script, unstructured(c.Object).(map[string]any))
		switch {
		case err != nil:
			failed++
			fmt.Printf("FAIL %s / %s: error: %v\n", c.Kind, c.Name, err)
		case hs.Status != c.Want || hs.Message == "":
			failed++
			fmt.Printf("FAIL %s / %s: want %s, got %s (%s)\n", c.Kind, c.Name, c.Want, hs.Status, hs.Message)
		default:
			passed++
			fmt.Printf("ok   %s / %s: %s (%s)\n", c.Kind, c.Name, hs.Status, hs.Message)
		}
	}
	fmt.Printf("argocd health (gopher-lua): %d passed, %d failed\n", passed, failed)
	if failed > 0 || passed == 0 {
		os.Exit(1)
	}
}
