# Installs restic-manager-agent on a Windows endpoint and enrolls it: the
# PowerShell twin of install-agent.sh. Run in an elevated PowerShell:
#
#   .\install-agent.ps1 -Server https://backup.example.net:8443 `
#       -Token TOKEN -Fingerprint sha256:HEX [-Name NAME] [-NoService]
#
# It checks -Fingerprint before downloading anything: the SHA-256 of the
# installation's CA that issued the server's certificate for this host (or,
# for an operator-provided certificate, of that certificate itself), downloads restic-manager-agent-windows-<arch>.exe
# and its .sha256 over that pinned connection, checks the hash, installs
# it under $env:ProgramFiles\restic-manager, enrolls and registers the
# Windows service (`restic-manager-agent install`).
#
# UNTESTED: no Windows machine is available to this project's CI; the
# same steps are tested on Linux (install-agent.sh, tests/cli/deploy.rs).
[CmdletBinding()]
param(
    [Parameter(Mandatory = $true)][string]$Server,
    [Parameter(Mandatory = $true)][string]$Token,
    [Parameter(Mandatory = $true)][string]$Fingerprint,
    [string]$Name = "",
    [string]$InstallDir = (Join-Path $env:ProgramFiles "restic-manager"),
    [switch]$NoService
)
$ErrorActionPreference = "Stop"
if (-not $Server.StartsWith("https://")) { throw "-Server must be an https:// URL" }
$Server = $Server.TrimEnd("/")
$want = $Fingerprint.ToLower().Replace("sha256:", "").Replace(":", "")

# 1. pin: the certificate itself, or the CA in its chain that issued it
#    for this host name, has the fingerprint's SHA-256
$handler = New-Object System.Net.Http.HttpClientHandler
$handler.ServerCertificateCustomValidationCallback = {
    param($req, $cert, $chain, $errors)
    $sha = [System.Security.Cryptography.SHA256]::Create()
    $hexOf = { param($c) -join ($sha.ComputeHash($c.RawData) | ForEach-Object { $_.ToString("x2") }) }
    if ((& $hexOf $cert) -eq $want) { return $true }
    # the CA is not in the machine's store: only an untrusted root may be wrong
    $nameOk = -not ($errors -band [System.Net.Security.SslPolicyErrors]::RemoteCertificateNameMismatch)
    $elements = @($chain.ChainElements | ForEach-Object { $_.Certificate })
    if ($elements.Count -lt 2) { return $false }
    $root = $elements[$elements.Count - 1]
    return $nameOk -and ((& $hexOf $root) -eq $want)
}
$client = New-Object System.Net.Http.HttpClient($handler)

# 2. download and verify
$arch = if ([Environment]::Is64BitOperatingSystem) { "x86_64" } else { throw "32-bit Windows is not supported" }
$file = "restic-manager-agent-windows-$arch.exe"
try {
    $bytes = $client.GetByteArrayAsync("$Server/download/agent/$file").GetAwaiter().GetResult()
    $sumLine = $client.GetStringAsync("$Server/download/agent/$file.sha256").GetAwaiter().GetResult()
} catch {
    throw "downloading $file from $Server failed (wrong fingerprint, or no Windows agent on the server): $_"
}
$sha = [System.Security.Cryptography.SHA256]::Create()
$got = -join ($sha.ComputeHash($bytes) | ForEach-Object { $_.ToString("x2") })
$expected = $sumLine.Split(" ")[0].Trim()
if ($got -ne $expected) { throw "$file has SHA-256 $got, the server says ${expected}: refusing to install it" }
Write-Host "install-agent: $file verified (sha256 $got)"

# 3. install
New-Item -ItemType Directory -Force -Path $InstallDir | Out-Null
$agent = Join-Path $InstallDir "restic-manager-agent.exe"
[System.IO.File]::WriteAllBytes($agent, $bytes)
if (-not (Get-Command restic -ErrorAction SilentlyContinue)) {
    Write-Warning "restic is not on PATH; install it (https://restic.net) before the first backup"
}

# 4. enroll and register the service
$enroll = @("enroll", "--server", $Server, "--token", $Token, "--fingerprint", $Fingerprint)
if ($Name -ne "") { $enroll += @("--hostname", $Name) }
& $agent @enroll
if ($LASTEXITCODE -ne 0) { throw "enrollment failed" }
if (-not $NoService) {
    & $agent install
    if ($LASTEXITCODE -ne 0) { throw "registering the service failed" }
}
Write-Host "install-agent: done ($agent)"
