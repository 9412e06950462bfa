package org.edgeexport.demo

import androidx.compose.foundation.border
import androidx.compose.foundation.layout.Arrangement
import androidx.compose.foundation.layout.Column
import androidx.compose.foundation.layout.Row
import androidx.compose.foundation.layout.aspectRatio
import androidx.compose.foundation.layout.fillMaxSize
import androidx.compose.foundation.layout.fillMaxWidth
import androidx.compose.foundation.layout.padding
import androidx.compose.foundation.layout.safeDrawingPadding
import androidx.compose.foundation.rememberScrollState
import androidx.compose.foundation.selection.selectable
import androidx.compose.foundation.verticalScroll
import androidx.compose.material3.Button
import androidx.compose.material3.MaterialTheme
import androidx.compose.material3.OutlinedButton
import androidx.compose.material3.RadioButton
import androidx.compose.material3.Text
import androidx.compose.runtime.Composable
import androidx.compose.runtime.remember
import androidx.compose.ui.Alignment
import androidx.compose.ui.Modifier
import androidx.compose.ui.graphics.Color
import androidx.compose.ui.unit.dp

@Composable
fun DemoScreen(vm: DemoViewModel) {
    val drawing = remember { Drawing() }
    Column(
        Modifier.fillMaxSize().safeDrawingPadding().verticalScroll(rememberScrollState()).padding(16.dp),
        verticalArrangement = Arrangement.spacedBy(12.dp),
    ) {
        Text("Edge Export demo", style = MaterialTheme.typography.headlineSmall)
        ModelPicker(vm)
        if (vm.imageSpec != null) {
            DrawPad(drawing, Modifier.fillMaxWidth(0.7f).aspectRatio(1f).border(1.dp, Color.Gray))
            Row(horizontalArrangement = Arrangement.spacedBy(8.dp)) {
                Button(onClick = { vm.classify(drawing.render()) }, enabled = !vm.busy && !drawing.isEmpty) {
                    Text("Classify")
                }
                OutlinedButton(onClick = drawing::clear) { Text("Clear") }
                OutlinedButton(
                    onClick = { vm.sampleImage()?.let(vm::classify) },
                    enabled = !vm.busy && vm.pkg?.appVectors != null,
                ) { Text("Sample") }
            }
        } else if (vm.pkg != null) {
            Text("This model's input is not an image: only the self-test applies.")
        }
        vm.prediction?.let { PredictionView(it) }
        Button(onClick = vm::selfTest, enabled = !vm.busy && vm.pkg != null) { Text("Self-test") }
        vm.report?.let { ReportView(it) }
        Text(vm.status, style = MaterialTheme.typography.bodySmall)
    }
}

@Composable
private fun ModelPicker(vm: DemoViewModel) {
    Column {
        for (entry in vm.models) {
            ChoiceRow("${entry.title} (${entry.runtime})", entry == vm.selected, !vm.busy) { vm.select(entry) }
        }
    }
}

/** One choice of a single-choice list (a package to run): the whole row selects it. */
@Composable
fun ChoiceRow(label: String, selected: Boolean, enabled: Boolean, onSelect: () -> Unit) {
    Row(
        Modifier.fillMaxWidth().selectable(selected = selected, enabled = enabled, onClick = onSelect),
        verticalAlignment = Alignment.CenterVertically,
    ) {
        RadioButton(selected = selected, onClick = null)
        Text(label, Modifier.padding(start = 8.dp))
    }
}

@Composable
private fun PredictionView(p: Prediction) {
    Column {
        for ((label, score) in p.topK) {
            Text("$label  ${"%.4f".format(score)}", style = MaterialTheme.typography.titleMedium)
        }
        Text("latency ${"%.2f".format(p.latencyMs)} ms", style = MaterialTheme.typography.bodySmall)
    }
}

@Composable
private fun ReportView(r: SelfTestReport) {
    Column {
        Text(
            if (r.passed) "PASS" else "FAIL",
            color = if (r.passed) Color(0xFF2E7D32) else Color(0xFFC62828),
            style = MaterialTheme.typography.titleLarge,
        )
        r.error?.let { Text(it) }
        for (o in r.outputs) {
            Text("${o.name}: ${if (o.passed) "pass" else "fail"} — ${o.checks.joinToString()}")
        }
        r.worst?.let { Text("worst: $it") }
        r.notes.forEach { Text(it) }
    }
}
