// Bundled for the browser by tests/test_proxy_browser.py (esbuild): the client as window.fal.
import { fal } from "@fal-ai/client";

window.fal = fal;
