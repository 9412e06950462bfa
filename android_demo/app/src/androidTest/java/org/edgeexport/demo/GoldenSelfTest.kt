package org.edgeexport.demo

import androidx.test.ext.junit.runners.AndroidJUnit4
import androidx.test.platform.app.InstrumentationRegistry
import org.junit.Assert.assertTrue
import org.junit.Test
import org.junit.runner.RunWith

/** Every bundled package reproduces its golden outputs on this device at its own thresholds. */
@RunWith(AndroidJUnit4::class)
class GoldenSelfTest {
    private val context = InstrumentationRegistry.getInstrumentation().targetContext

    @Test
    fun indexListsBundledModels() {
        assertTrue("assets/models/index.json lists no models: run `make demo-apps`", ModelIndex.load(context.assets).isNotEmpty())
    }

    @Test
    fun everyBundledPackagePassesItsGoldenSelfTest() {
        val failures = ModelIndex.load(context.assets).mapNotNull { entry ->
            val (pkg, files) = AssetPackageFiles.open(context, entry)
            val report = Runners.open(pkg, files).use { SelfTest(pkg, files).run(it) }
            println("${entry.path}: ${if (report.passed) "PASS" else "FAIL"} worst=${report.worst} ${report.notes}")
            if (report.passed) null else "${entry.path}: ${report.error ?: report.worst}"
        }
        assertTrue(failures.joinToString("\n"), failures.isEmpty())
    }
}
