use assert_cmd::Command;

#[test]
fn help_lists_the_binary() {
    let out = Command::cargo_bin("ggplan")
        .unwrap()
        .arg("--help")
        .assert()
        .success();
    let stdout = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    assert!(stdout.contains("ggplan"), "{stdout}");
}
