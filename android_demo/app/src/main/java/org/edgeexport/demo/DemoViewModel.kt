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

data class Prediction(val topK: List<Pair<String, Float>>, val latencyMs: Double)

/** The loaded model and everything the screen shows; work runs off the main thread. */
class DemoViewModel(app: Application) : AndroidViewModel(app) {
    val models: List<IndexEntry> = ModelIndex.load(app.assets)

    var selected by mutableStateOf<IndexEntry?>(null)
        private set
    var pkg by mutableStateOf<ModelPackage?>(null)
        private set
    var imageSpec by mutableStateOf<ImageSpec?>(null)
        private set
    var prediction by mutableStateOf<Prediction?>(null)
        private set
    var report by mutableStateOf<SelfTestReport?>(null)
        private set
    var status by mutableStateOf(if (models.isEmpty()) "No bundled models: run `make demo-apps`." else "")
        private set
    var busy by mutableStateOf(false)
        private set

    private var files: PackageFiles? = null
    private var runner: Runner? = null
    private var labels: List<String> = emptyList()

    init {
        models.firstOrNull()?.let(::select)
    }

    fun select(entry: IndexEntry) = work("Loading ${entry.title}…") {
        runner?.close()
        runner = null
        val (p, f) = AssetPackageFiles.open(getApplication(), entry)
        val r = Runners.open(p, f)
        val l = p.labelsFile?.let { String(f.bytes(it), Charsets.UTF_8).lines().filter(String::isNotEmpty) }
        withContext(Dispatchers.Main) {
            selected = entry
            pkg = p
            files = f
            runner = r
            labels = l.orEmpty()
            imageSpec = p.inputs.singleOrNull()?.let { Preprocess.resolve(p.preprocessing, it.shape) }
            prediction = null
            report = null
        }
        "${p.title} on ${p.runtime}"
    }

    fun classify(pixels: Pixels) = work("Running…") {
        val p = checkNotNull(pkg)
        val input = p.inputs.single()
        val tensor = Preprocess.toTensor(pixels, checkNotNull(imageSpec))
        val feed = listOf(HostTensor.fromFloats(input.name, input.dtype, input.shape, tensor))
        val start = System.nanoTime()
        val scores = checkNotNull(runner).run(feed).first().toFloatArray()
        val ms = (System.nanoTime() - start) / 1e6
        val top = Preprocess.topK(scores, TOP_K).map { (i, s) -> (labels.getOrNull(i) ?: "#$i") to s }
        withContext(Dispatchers.Main) { prediction = Prediction(top, ms) }
        "Top-1 ${top.first().first}"
    }

    fun sampleImage(): Pixels? = pkg?.appVectors?.let { v -> files?.let { Images.decode(it.bytes(v.image)) } }

    fun selfTest() = work("Self-test…") {
        val r = SelfTest(checkNotNull(pkg), checkNotNull(files)).run(checkNotNull(runner))
        withContext(Dispatchers.Main) { report = r }
        if (r.passed) "Self-test passed" else "Self-test FAILED"
    }

    private fun work(message: String, block: suspend () -> String) {
        if (busy) return
        busy = true
        status = message
        viewModelScope.launch {
            status = try {
                withContext(Dispatchers.Default) { block() }
            } catch (e: Exception) {
                "Error: ${e.message ?: e.javaClass.simpleName}"
            }
            busy = false
        }
    }

    override fun onCleared() {
        runner?.close()
    }

    companion object {
        const val TOP_K = 3
    }
}
