import XCTest
@testable import EdgeExportDemo

/// Every bundled package reproduces its golden outputs on this device at its own thresholds.
final class GoldenSelfTests: XCTestCase {
    func testIndexListsBundledModels() throws {
        XCTAssertFalse(try ModelIndex.load().isEmpty, "Models/index.json lists no models: run `make demo-apps`")
    }

    func testEveryBundledPackagePassesItsGoldenSelfTest() async throws {
        for entry in try ModelIndex.load() {
            let package = try ModelPackage.open(entry)
            let runner = try await Runners.open(package)
            let report = SelfTest(package: package).run(runner)
            print("\(entry.path): \(report.passed ? "PASS" : "FAIL") worst=\(report.worst?.description ?? "-") \(report.notes)")
            XCTAssertTrue(report.passed, "\(entry.path): \(report.error ?? report.worst?.description ?? "no outputs")")
        }
    }
}
