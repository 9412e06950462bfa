package org.edgeexport.demo

import android.app.Application
import androidx.compose.runtime.getValue
import androidx.compose.runtime.mutableStateOf
import androidx.compose.runtime.setValue
import androidx.lifecycle.AndroidViewModel
import androidx.lifecycle.viewModelScope
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.launch
import kotlinx.coroutines.withContext
import org.pytorch.executorch.extension.llm.LlmCallback
import org.pytorch.executorch.extension.llm.LlmModule

/** Text generation with ExecuTorch's LLM runner (`LlmModule`) over an LLM package. */
class LlmViewModel(app: Application) : AndroidViewModel(app) {
    val packages: List<LlmPackage> = LlmPackage.list(app)

    var selected by mutableStateOf<LlmPackage?>(null)
        private set
    var output by mutableStateOf("")
        private set
    var stats by mutableStateOf("")
        private set
    var selfTest by mutableStateOf<String?>(null)
        private set
    var status by mutableStateOf(
        if (packages.isEmpty()) "No LLM package: copy dist/<name>-<version>/android-<recipe>/ to app/src/main/assets/llm/." else ""
    )
        private set
    var busy by mutableStateOf(false)
        private set

    private var module: LlmModule? = null

    init {
        packages.firstOrNull()?.let(::select)
    }

    fun select(pkg: LlmPackage) = work("Loading ${pkg.name} ${pkg.recipe}…") {
        module?.resetNative()
        val app = getApplication<Application>()
        val files = pkg.files(app)
        val pte = files.localFile(pkg.artifactPath, pkg.artifactSha256)
        val tokenizer = files.localFile(pkg.tokenizerPath, pkg.artifactSha256)
        // temperature 0: greedy, as the package's sampling defaults and golden files were made
        val m = LlmModule(pte.absolutePath, tokenizer.absolutePath, 0.0f)
        check(m.load() == 0) { "LlmModule.load failed for ${pkg.artifactPath}" }
        withContext(Dispatchers.Main) {
            module = m
            selected = pkg
            output = ""
            selfTest = null
        }
        "${pkg.name} ${pkg.recipe}: context ${pkg.maxContext} tokens"
    }

    /** Stream a continuation of [prompt]; [maxNewTokens] is capped by the package's context. */
    fun generate(prompt: String, maxNewTokens: Int) = work("Generating…") {
        val pkg = checkNotNull(selected)
        // seqLen counts prompt tokens too; the prompt's characters bound its token count from above
        val text = run(prompt, minOf(pkg.maxContext, prompt.length + maxNewTokens))
        "${text.length} characters"
    }

    /** The golden prompt must continue exactly as on the host (greedy, same artifact). */
    fun runSelfTest() = work("Self-test…") {
        val pkg = checkNotNull(selected)
        val golden = pkg.golden(getApplication(), 0)
        val text = run(golden.prompt, golden.promptIds.size + golden.continuationIds.size)
        val stoppedAtEos = golden.continuationIds.any { it in pkg.eosIds } && golden.continuationText.startsWith(text)
        val passed = text == golden.continuationText || stoppedAtEos
        withContext(Dispatchers.Main) {
            selfTest = if (passed) "PASS: the golden continuation, token for token" else
                "FAIL: expected “${golden.continuationText}”, got “$text”"
        }
        if (passed) "self-test passed" else "self-test failed"
    }

    private suspend fun run(prompt: String, seqLen: Int): String {
        val m = checkNotNull(module)
        val text = StringBuilder()
        withContext(Dispatchers.Main) { output = ""; stats = "" }
        m.generate(prompt, seqLen, object : LlmCallback {
            override fun onResult(result: String) {
                text.append(result)
                val shown = text.toString()
                viewModelScope.launch(Dispatchers.Main) { output = shown }
            }

            override fun onStats(stats: String) {
                viewModelScope.launch(Dispatchers.Main) { this@LlmViewModel.stats = tokensPerSecond(stats) }
            }
        }, false)
        return text.toString()
    }

    private fun work(message: String, block: suspend () -> String) {
        busy = true
        status = message
        viewModelScope.launch(Dispatchers.Default) {
            val result = runCatching { block() }
            withContext(Dispatchers.Main) {
                status = result.getOrElse { "error: ${it.message}" }
                busy = false
            }
        }
    }

    override fun onCleared() {
        module?.resetNative()
    }

    companion object {
        /** The runner's stats JSON as prefill and decode tok/s (timestamps in ms). */
        fun tokensPerSecond(json: String): String = runCatching {
            val s = org.json.JSONObject(json)
            val prompt = s.getLong("num_prompt_tokens")
            val generated = s.getLong("num_generated_tokens")
            val prefillMs = s.getLong("prompt_eval_end_ms") - s.getLong("inference_start_ms")
            val decodeMs = s.getLong("inference_end_ms") - s.getLong("prompt_eval_end_ms")
            "prefill %.1f tok/s, decode %.1f tok/s".format(
                prompt * 1000.0 / maxOf(prefillMs, 1), generated * 1000.0 / maxOf(decodeMs, 1)
            )
        }.getOrDefault(json)
    }
}
